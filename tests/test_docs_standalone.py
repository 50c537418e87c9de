"""The docs stand alone: no link leaves the repository, the protocol notes are in it, figures match the benchmarks."""

from __future__ import annotations

import re
from pathlib import Path

from gradium_cli.protocol.formats import FORMATS
from gradium_cli.server.state import ServerOptions
from tests.servers import REPO

DOCS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_stays_inside_the_repository_and_exists() -> None:
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor in the same page
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            where = f"{doc.relative_to(REPO)} links {target}"
            assert path.is_relative_to(REPO), f"{where}: outside the repository"
            assert path.exists(), f"{where}: no such file"


def test_readme_links_the_protocol_notes_in_the_repo() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "](docs/protocol.md)" in readme
    assert "shared/PROTOCOL" not in readme


def test_protocol_notes_agree_with_the_code() -> None:
    notes = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    for name in FORMATS:
        assert f"`{name}`" in notes, f"format {name} is missing from docs/protocol.md"
    rows = {row.split("|")[1].strip(): row for row in notes.splitlines() if row.startswith("| `pcm_8000`")}
    assert rows, "the raw formats row"
    bytes_per_message = [FORMATS[f"pcm_{rate}"].chunk_bytes for rate in (8000, 16000, 22050, 24000, 44100)]
    assert "80 ms: " + ", ".join(str(b) for b in bytes_per_message) + " bytes" in notes
    assert f"{FORMATS['pcm'].chunk_samples} samples, {FORMATS['pcm'].chunk_bytes} bytes" in notes
    assert f"{FORMATS['ulaw_8000'].chunk_bytes} bytes" in notes
    limits = ServerOptions(data_dir=Path("."))
    flat = " ".join(notes.split())
    assert f"a message over {limits.max_message_bytes >> 20} MiB" in flat
    assert f"more than {limits.max_text_chars:,} characters in one request" in flat
    assert f"more than {limits.max_requests_per_socket} requests on one socket" in flat
    assert f"more than {limits.max_connections} open sockets" in flat
    assert f"uploads over {limits.max_upload_bytes >> 20} MB" in flat
    for kind in ("setup", "text", "end_of_stream", "ready", "audio", "error"):
        assert f"| `{kind}` |" in notes


def test_speed_up_figures_match_the_benchmarks() -> None:
    """Every `NNx` in the README and the batch guide is a figure bench/README.md recorded."""
    bench = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    recorded = set(re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)x\b", bench))
    for doc in (REPO / "README.md", REPO / "docs" / "batch.md"):
        figures = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)x\b", doc.read_text(encoding="utf-8"))
        for figure in figures:
            assert figure in recorded, f"{doc.relative_to(REPO)} says {figure}x; bench/README.md does not"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"Met: 45x and 58x", bench) and "45x less time than a loop over" in readme
