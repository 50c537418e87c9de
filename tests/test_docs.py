"""Generated docs stay current (completions, man page, README blocks) and completion works for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from gradium_cli.devtools import gendocs
from gradium_cli.errors import EXIT_CODE_MEANINGS
from tests.cli_helpers import gradium, isolated_env
from tests.needs import need_program
from tests.servers import REPO, gradium_exe

REGENERATE = "run `python -m gradium_cli.devtools.gendocs`"


def test_generated_files_are_up_to_date() -> None:
    expected = gendocs.generated()
    assert set(expected) >= {
        REPO / "completions" / "gradium.bash",
        REPO / "completions" / "gradium.zsh",
        REPO / "completions" / "gradium.fish",
        REPO / "man" / "gradium.1",
    }
    for path, content in expected.items():
        assert path.exists(), f"{path.relative_to(REPO)} is missing: {REGENERATE}"
        assert path.read_text(encoding="utf-8") == content, f"{path.relative_to(REPO)} is stale: {REGENERATE}"


def test_readme_blocks_come_from_the_app() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for begin, end in (gendocs.USAGE_MARKERS, gendocs.EXIT_MARKERS):
        assert begin in readme and end in readme, f"README.md lost the {begin} ... {end} markers"
    exit_block = readme.split(gendocs.EXIT_MARKERS[0])[1].split(gendocs.EXIT_MARKERS[1])[0]
    assert exit_block.strip() == gendocs.readme_exit_codes().strip()
    usage_block = readme.split(gendocs.USAGE_MARKERS[0])[1].split(gendocs.USAGE_MARKERS[1])[0]
    for node in gendocs.walk():
        if node.path and not node.is_group:
            assert f"`{node.usage()}`" in usage_block, node.name


def test_replace_block_touches_only_the_marked_text() -> None:
    text = "intro\n<!-- BEGIN EXIT CODES -->\nold\n<!-- END EXIT CODES -->\noutro\n"
    assert gendocs.replace_block(text, gendocs.EXIT_MARKERS, "new\n") == (
        "intro\n<!-- BEGIN EXIT CODES -->\nnew\n<!-- END EXIT CODES -->\noutro\n"
    )
    assert gendocs.replace_block("no markers\n", gendocs.EXIT_MARKERS, "new\n") == "no markers\n"


def rendered_man_page() -> str:
    assert shutil.which("man"), "man is not installed (apt-get install man-db; .ci/run does)"
    done = subprocess.run(
        ["man", "-l", str(REPO / "man" / "gradium.1")],
        capture_output=True,
        env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat", "LANG": "C.UTF-8"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return subprocess.run(["col", "-b"], input=done.stdout, capture_output=True, timeout=60).stdout.decode()


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)  # roff fills lines; compare runs of words


def man_section(page: str, name: str) -> str:
    """The text under a section heading (headings are the unindented lines)."""
    sections = re.split(r"^(?=\S)", page, flags=re.MULTILINE)
    return flat(next(part for part in sections if part and part.splitlines()[0] == name))


def test_man_page_renders_every_command_option_exit_code_and_variable() -> None:
    raw = rendered_man_page()
    page = flat(raw)
    headings = [line for line in raw.splitlines() if line and not line[0].isspace()][1:-1]
    assert headings == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "GLOBAL OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ]
    for node in gendocs.walk():
        if node.path:
            assert node.usage().split(" [")[0] in page, node.name
        for flags, _help in node.options():
            assert flags.split(" <")[0].split(" ")[0] in page, f"{node.name} {flags}"
    exit_status = man_section(raw, "EXIT STATUS")
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f" {int(code)} {meaning[0].upper()}{meaning[1:8]}" in exit_status, (code, exit_status)


def source_environment_variables() -> set[str]:
    """Every GRADIUM_* variable (and NO_COLOR) the package's code mentions."""
    found = set()
    for path in (REPO / "gradium_cli").rglob("*.py"):
        found.update(re.findall(r"\b(GRADIUM_[A-Z_]+|NO_COLOR)\b", path.read_text(encoding="utf-8")))
    return found


def test_man_page_documents_every_environment_variable() -> None:
    environment = man_section(rendered_man_page(), "ENVIRONMENT")
    variables = source_environment_variables()
    assert {"GRADIUM_API_KEY", "GRADIUM_PROFILE", "GRADIUM_SERVE_API_KEY", "NO_COLOR"} <= variables
    missing = sorted(name for name in variables if name not in environment)
    assert not missing, f"undocumented in man/gradium.1 ENVIRONMENT: {missing} (add them to gendocs)"


def completion_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return isolated_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)


def complete_bash(tmp_path: Path, words: str, env: dict[str, str]) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    done = gradium(
        tmp_path, env={**env, "_GRADIUM_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""  # completion is silent
    return [line for line in done.stdout.decode().splitlines() if line]


def test_commands_and_options_complete(tmp_path: Path) -> None:
    env = completion_env(tmp_path)
    assert complete_bash(tmp_path, "gradium con", env) == ["config"]
    assert complete_bash(tmp_path, "gradium auth ", env) == ["login", "status", "logout"]
    assert "--timestamps" in complete_bash(tmp_path, "gradium say --time", env)


def test_voice_names_complete_from_the_api_and_are_cached(tmp_path: Path, server_factory) -> None:
    server = server_factory()
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    assert complete_bash(tmp_path, "gradium say --voice Em", env) == ["Emma"]
    assert "Jack" in complete_bash(tmp_path, "gradium stream -V J", env)
    assert complete_bash(tmp_path, "gradium say --voice YTpq", env) == ["YTpq7expH9539ERJ"]  # an id, when no name fits
    cached = list((tmp_path / "cache" / "gradium" / "completion").glob("voices-*.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["items"]
    server.stop()  # the cache answers now: the server is gone
    assert complete_bash(tmp_path, "gradium say --voice Em", env) == ["Emma"]
    # an old cache is not trusted: with the server gone there is nothing to offer, silently
    saved = json.loads(cached[0].read_text())
    cached[0].write_text(json.dumps({**saved, "saved": saved["saved"] - 3600}))
    assert complete_bash(tmp_path, "gradium say --voice Em", env) == []


def test_dictionary_names_complete(tmp_path: Path, server_factory) -> None:
    server = server_factory()
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    created = gradium(tmp_path, "pronounce", "create", "Brands", "--language", "en", env=env)
    assert created.returncode == 0, created.stderr.decode()
    assert complete_bash(tmp_path, "gradium say --pronunciation Br", env) == ["Brands"]


def test_completion_uses_the_key_on_the_command_line(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key="gsk_complete_key_1234")
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    assert complete_bash(tmp_path, "gradium say --voice Em", env) == []  # refused: nothing, no error
    words = "gradium say --api-key gsk_complete_key_1234 --voice Em"
    assert complete_bash(tmp_path, words, env) == ["Emma"]
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert "gsk_complete_key_1234" not in path.read_text()


def test_unreachable_server_offers_nothing(tmp_path: Path) -> None:
    # With nothing configured the offline engine's names complete (tests/test_completion.py).
    unreachable = completion_env(tmp_path, GRADIUM_BASE_URL="http://127.0.0.1:9/api/")
    assert complete_bash(tmp_path, "gradium say --voice Em", unreachable) == []


def test_checked_in_bash_script_completes_voices(tmp_path: Path, local_server) -> None:
    """The generated script itself, sourced by a real bash, calling our `gradium`."""
    need_program("bash")
    env = completion_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    env["PATH"] = f"{Path(gradium_exe()).parent}{os.pathsep}{env['PATH']}"
    script = (
        f"source {REPO / 'completions' / 'gradium.bash'}\n"
        "COMP_WORDS=(gradium say --voice Em); COMP_CWORD=3\n"
        "_gradium_completion gradium\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["Emma"]
