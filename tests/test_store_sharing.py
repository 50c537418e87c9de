"""The store's collections shared by processes: `gradium serve --workers N` runs N server
processes on one data dir, and offline commands use it too.

Real files and real processes (forked): what one writes the others read at once, two
writing at the same time lose nothing, and a file that is not the store's is refused
in one sentence.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from gradium_cli.server.store import Collection, CorruptStore
from tests.cli_helpers import gradium

WRITES_EACH = 40


def record(uid: str, **fields: object) -> dict[str, object]:
    return {"uid": uid, "name": uid, **fields}


def test_what_one_collection_writes_another_on_the_same_file_reads_at_once(tmp_path: Path) -> None:
    path = tmp_path / "voices.json"
    mine, theirs = Collection(path), Collection(path)
    assert theirs.all() == []
    mine.put(record("a"))
    assert theirs.get("a") == record("a")
    theirs.put(record("a", name="renamed"))  # the same size as before, written at once
    assert mine.get("a") == record("a", name="renamed")
    assert theirs.delete("a")
    assert mine.get("a") is None and mine.count() == 0
    assert not mine.delete("a")  # gone already: nothing to write
    path.unlink()  # removed behind the store's back: empty, not stale
    assert mine.all() == []


def _writer(path: str, prefix: str, start: multiprocessing.synchronize.Event) -> None:
    collection = Collection(Path(path))
    start.wait(10)
    for index in range(WRITES_EACH):
        collection.put(record(f"{prefix}{index:03d}"))


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """Each change is made on the records as they are on disk, under a lock held across
    processes: without it, each writer's last save would drop the other's records."""
    path = tmp_path / "voices.json"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    writers = [context.Process(target=_writer, args=(str(path), prefix, start)) for prefix in ("x", "y", "z")]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    stored = json.loads(path.read_text())
    assert sorted(stored) == sorted(f"{p}{i:03d}" for p in "xyz" for i in range(WRITES_EACH))
    assert Collection(path).count() == 3 * WRITES_EACH


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2"),
        (b"\xff\xfe", "is not valid JSON ('utf-8' codec can't decode byte 0xff"),
        (b"[1, 2]", "does not hold an object of records"),
    ],
)
def test_a_file_that_is_not_the_stores_is_refused_in_one_sentence(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "voices.json"
    path.write_bytes(content)
    with pytest.raises(CorruptStore) as refused:
        Collection(path)
    assert str(refused.value).startswith(f"{path} {says}")
    assert str(refused.value).endswith("; fix or move it away") and "\n" not in str(refused.value)
    assert path.read_bytes() == content  # left as it was, for the user to look at


def test_an_offline_command_on_a_corrupt_data_dir_names_the_file_and_exits_3(tmp_path: Path) -> None:
    """The built-in engine cannot start on it; the command said "run the command again",
    which could never help. Once the file is fixed, the next command speaks."""
    data = tmp_path / "data"  # isolated_env's GRADIUM_DATA_DIR
    data.mkdir()
    broken = data / "pronunciations.json"
    broken.write_text("[]")
    result = gradium(tmp_path, "say", "Hello.", "-o", "x.wav")
    assert result.returncode == 3
    assert result.stderr.decode().splitlines() == [
        f"gradium: error: the built-in engine cannot start: {broken} does not hold an object of records; "
        "fix or move it away"
    ]
    assert not (tmp_path / "x.wav").exists()
    broken.write_text("{}")
    again = gradium(tmp_path, "say", "Hello.", "-o", "x.wav")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "x.wav").stat().st_size > 1000


def test_a_directory_in_place_of_the_file_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """Not an OSError from deep inside open(): `gradium serve` says CorruptStore in one line."""
    path = tmp_path / "voices.json"
    path.mkdir()
    with pytest.raises(CorruptStore) as refused:
        Collection(path)
    assert str(refused.value) == f"{path} cannot be read (Is a directory); fix or move it away"


def test_records_that_are_not_objects_are_refused_in_one_sentence(tmp_path: Path) -> None:
    """Each record is used as a dict (dict(record), record["uid"]): one that is not failed every
    request that listed the collection, with a traceback in the log, instead of the start."""
    path = tmp_path / "voices.json"
    path.write_text('{"a": 1}')
    with pytest.raises(CorruptStore) as refused:
        Collection(path)
    assert str(refused.value) == f"{path} does not hold an object of records; fix or move it away"


def test_removing_dead_uploads_skips_what_is_not_a_spool_file(tmp_path: Path) -> None:
    """A FIFO named like a spool file (anyone who can write to the data dir can make one) held
    a server's start for good: opening it waited for a writer. Only regular files are removed."""
    import os
    import threading

    from gradium_cli.server.store import remove_dead_uploads

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    os.mkfifo(uploads / ".upload-fifo")
    (uploads / ".upload-dead").write_bytes(b"half a sample")
    worker = threading.Thread(target=remove_dead_uploads, args=(uploads,), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "held by the FIFO"
    assert sorted(path.name for path in uploads.iterdir()) == [".upload-fifo"]
