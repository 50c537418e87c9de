"""Generate the shell completions, the man page and the README's usage blocks from the Typer app.

    python -m gradium_cli.devtools.gendocs           # rewrite the checked-in files
    python -m gradium_cli.devtools.gendocs --check   # exit 1 if any is stale (CI, tests)

Everything comes from one source: the command tree Typer builds
(`typer.main.get_command`), so a new command or option shows up everywhere on
the next run. The exit codes come from `gradium_cli.errors.EXIT_CODE_MEANINGS`.
Output is deterministic (no dates) so staleness is a plain comparison.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from gradium_cli import __version__
from gradium_cli.config import ENV_VARS, SETTING_HELP
from gradium_cli.errors import EXIT_CODE_MEANINGS

REPO = Path(__file__).resolve().parents[2]
PROG = "gradium"
COMPLETE_VAR = "_GRADIUM_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
USAGE_MARKERS = ("<!-- BEGIN GENERATED USAGE -->", "<!-- END GENERATED USAGE -->")
EXIT_MARKERS = ("<!-- BEGIN EXIT CODES -->", "<!-- END EXIT CODES -->")

# Variables read outside the settings table (the settings' own come from config.ENV_VARS).
EXTRA_ENVIRONMENT = {
    "GRADIUM_PROFILE": "Config profile to use, like --profile (default: default).",
    "GRADIUM_CONFIG_DIR": "Directory of config.ini, instead of the platform config dir.",
    "GRADIUM_DATA_DIR": "Where the offline engine and gradium serve keep custom voices and dictionaries.",
    "GRADIUM_DEBUG": "Set to 1 to show a Python traceback instead of the one-line error.",
    "GRADIUM_ENGINE_GUARD": "Set to off to let the known eSpeak NG crash input through (to test crash isolation).",
    "GRADIUM_ENGINE_TIMEOUT_S": "`gradium serve`: seconds (plus 10 ms per character) an engine worker may take "
    "for one text before it is killed as hung and replaced [default: 10]",
    "GRADIUM_ENGINE_LINGER_S": "Seconds the resident built-in engine waits for the next command with no key "
    "before it exits; 0 keeps none (each command starts its own engine process) [default: 120]",
    "GRADIUM_ENGINE_READY_S": "Seconds a command with no key waits for a running resident engine to answer "
    "(one stopped with SIGSTOP does not) before it starts an engine of its own [default: 3]",
    "NO_COLOR": "Any value turns colour off, like --no-color.",
    "XDG_CONFIG_HOME": "Base of the config dir on Linux (default ~/.config).",
    "XDG_DATA_HOME": "Base of the data dir on Linux (default ~/.local/share).",
    "XDG_CACHE_HOME": "Base of the completion cache and the request cache on Linux (default ~/.cache).",
    "GRADIUM_CACHE_DIR": "Where the request cache (--cache) keeps its entries, instead of ~/.cache/gradium/requests.",
    "GRADIUM_MAX_REQUESTS_PER_SOCKET": "Requests the server allows on one WebSocket (default 64, the service's); "
    "say and stream move to a fresh socket before it.",
    "GRADIUM_MAX_REQUEST_CHARS": "Characters the server allows in one request (default 100000).",
    "GRADIUM_MAX_SESSION_S": "Seconds the server allows one request to last (default 300).",
}
FILES = {
    "~/.config/gradium/config.ini": "Settings, one INI section per profile; mode 0600 (it holds the API key). "
    "$GRADIUM_CONFIG_DIR/config.ini when set.",
    "~/.local/share/gradium/": "Custom voices and pronunciation dictionaries of the offline engine and "
    "gradium serve ($GRADIUM_DATA_DIR when set).",
    "~/.cache/gradium/completion/": "Voice and dictionary names for shell completion, kept five minutes.",
    "~/.cache/gradium/drafts.json": "Draft voices made by gradium voices design, until they expire (for completion).",
    "~/.cache/gradium/requests/": "The request cache of say and batch --cache ($GRADIUM_CACHE_DIR when set).",
    "OUT_DIR/.gradium-batch.jsonl": "State of a gradium batch run, so a killed run resumes.",
}
EXAMPLES = (
    ("Speak once, to a file", 'gradium say "Hello there" -o hello.wav'),
    ("Speak an LLM's output as it is produced", 'llm "tell me a story" | gradium stream'),
    ("Subtitles for a narration", "gradium say -f script.txt -o narration.wav --timestamps narration.srt"),
    ("One file per CSV row, 16 at a time", "gradium batch prompts.csv --out-dir clips/ --jobs 16"),
    ("Store a key (checked first) and see the credits left", "gradium auth login && gradium auth status"),
    ("Check the whole set-up", "gradium doctor"),
    ("Talk to the WebSocket by hand", "gradium ws-raw"),
    ("Offline server for any client", "gradium serve --port 8765"),
)


@dataclass(frozen=True)
class Node:
    """One command of the tree with the context its help is rendered in."""

    path: tuple[str, ...]  # ("voices", "list")
    command: Any  # a Typer (click) Command or Group
    ctx: typer.Context

    @property
    def name(self) -> str:
        return " ".join((PROG, *self.path))

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "commands")

    def usage(self) -> str:
        return " ".join([self.name, *self.command.collect_usage_pieces(self.ctx)])

    def options(self) -> list[tuple[str, str]]:
        records = []
        for param in self.command.params:
            if getattr(param, "hidden", False):
                continue
            record = param.get_help_record(self.ctx)
            if record is not None:
                records.append((record[0], record[1] or ""))
        return records

    def summary(self) -> str:
        """The help's first paragraph: fuller than the one-line summary `gradium --help` lists."""
        paragraphs = self.paragraphs()
        return paragraphs[0][1] if paragraphs else str(self.command.get_short_help_str(limit=200))

    def paragraphs(self) -> list[tuple[bool, str]]:
        """(preformatted, text) paragraphs of the help text; click's `\\b` marks preformatted ones."""
        out = []
        for block in re.split(r"\n\s*\n", (self.command.help or "").strip()):
            if block.startswith("\b"):
                out.append((True, block.lstrip("\b").strip("\n")))
            elif block.strip():
                out.append((False, " ".join(line.strip() for line in block.splitlines())))
        return out


def root_command() -> Any:
    from gradium_cli.cli.app import app

    return typer.main.get_command(app)


def walk(command: Any | None = None) -> Iterator[Node]:
    """Every command, depth first, in the order the app registers them."""
    command = command or root_command()
    root = Node((), command, typer.Context(command, info_name=PROG))

    def visit(node: Node) -> Iterator[Node]:
        yield node
        if node.is_group:
            for name, child in node.command.commands.items():
                if getattr(child, "hidden", False):
                    continue
                yield from visit(Node((*node.path, name), child, typer.Context(child, info_name=name, parent=node.ctx)))

    yield from visit(root)


def environment() -> dict[str, str]:
    """Every variable the tool reads: settings, extras, and any `envvar=` declared on an option."""
    found = {env: f"The {name} setting: {SETTING_HELP[name]}." for name, env in ENV_VARS.items()}
    found.update(EXTRA_ENVIRONMENT)
    for node in walk():
        for param in node.command.params:
            names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            for env in names:
                if env and env not in found:
                    found[env] = f"{param.help or param.name} ({node.name} {param.opts[0] if param.opts else ''})."
    return found


# ----------------------------------------------------------------------------- completions


# Typer's bash script puts each answer in COMPREPLY as it is, so `eSpeak Afrikaans` would become
# two words on the command line. This one quotes each answer as bash would (printf %q).
BASH_COMPLETION = f"""# bash completion for {PROG}: generated by `python -m gradium_cli.devtools.gendocs`.
_{PROG}_completion() {{
    local IFS=$'\\n'
    local answer
    COMPREPLY=()
    for answer in $( env COMP_WORDS="${{COMP_WORDS[*]}}" \\
                         COMP_CWORD=$COMP_CWORD \\
                         {COMPLETE_VAR}=complete_bash $1 ); do
        COMPREPLY+=( "$(printf '%q' "$answer")" )
    done
    return 0
}}

complete -o default -F _{PROG}_completion {PROG}
"""


def completion_script(shell: str) -> str:
    """What `_GRADIUM_COMPLETE=source_SHELL gradium` prints (Typer's completion scripts; bash: ours)."""
    from gradium_cli.cli.app import app

    if shell == "bash":
        return BASH_COMPLETION

    result = CliRunner().invoke(app, [], env={COMPLETE_VAR: f"source_{shell}"}, prog_name=PROG)
    if result.exit_code != 0 or not result.stdout.strip():
        raise RuntimeError(f"no {shell} completion script: {result.output}")
    note = f"# {shell} completion for {PROG}: generated by `python -m gradium_cli.devtools.gendocs`."
    lines = result.stdout.strip().splitlines()
    # zsh reads `#compdef` only on the first line.
    at = 1 if lines[0].startswith("#compdef") else 0
    return "\n".join([*lines[:at], note, *lines[at:]]) + "\n"


# ----------------------------------------------------------------------------- man page

_ROFF_CHARS = {"…": "...", "·": "\\(md", "→": "\\(->", "—": "\\(em", "–": "\\(en", "≥": "\\(>=", "≤": "\\(<="}


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes escaped, hyphens literal, no leading control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    for char, escape in _ROFF_CHARS.items():
        text = text.replace(char, escape)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _man_options(node: Node) -> list[str]:
    lines = []
    for flags, help_text in node.options():
        lines += [".TP", f"\\fB{roff(flags)}\\fR", roff(help_text) if help_text else ""]
    return lines


def _man_paragraphs(node: Node) -> list[str]:
    lines = []
    for preformatted, text in node.paragraphs():
        if preformatted:
            lines += [".PP", ".RS 4", ".nf", roff(text), ".fi", ".RE"]
        else:
            lines += [".PP", roff(text)]
    return lines


def man_page() -> str:
    nodes = list(walk())
    root = nodes[0]
    lines = [
        f'.TH GRADIUM 1 "" "gradium-cli {__version__}" "User Commands"',
        ".SH NAME",
        f"gradium \\- {roff(root.paragraphs()[0][1] if root.paragraphs() else '')}",
        ".SH SYNOPSIS",
        ".B gradium",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        roff(
            "gradium speaks text through the Gradium text-to-speech API: once to a file, a pipe or the "
            "speakers (say), live as text arrives (stream), or in bulk (batch). It manages voices and "
            "pronunciation dictionaries, opens a protocol console (ws-raw), and runs a local "
            "Gradium-compatible server with the eSpeak NG engine (serve). With no API key and no base URL "
            "configured, commands use that engine in-process, offline."
        ),
        ".PP",
        roff(
            "Audio goes to stdout and text for people to stderr; - means stdin or stdout. Settings resolve "
            "as flag > environment > config-file profile > default (see gradium config, ENVIRONMENT and FILES)."
        ),
        ".SH GLOBAL OPTIONS",
        *_man_options(root),
        ".SH COMMANDS",
    ]
    for node in nodes[1:]:
        lines += [f'.SS "{roff(node.usage())}"', *_man_paragraphs(node)]
        if node.is_group:
            lines += [".PP", "Subcommands: " + roff(", ".join(node.command.commands)) + "."]
        lines += _man_options(node)
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_CODE_MEANINGS.items():
        lines += [".TP", f".B {int(code)}", roff(meaning[0].upper() + meaning[1:] + ".")]
    lines.append(".SH ENVIRONMENT")
    for name, meaning in environment().items():
        lines += [".TP", f".B {roff(name)}", roff(meaning)]
    lines.append(".SH FILES")
    for path, meaning in FILES.items():
        lines += [".TP", f".I {roff(path)}", roff(meaning)]
    lines.append(".SH EXAMPLES")
    for title, example in EXAMPLES:
        lines += [".PP", roff(title + ":"), ".RS 4", ".nf", roff(example), ".fi", ".RE"]
    lines += [".SH SEE ALSO", roff("gradium COMMAND --help; the README; https://gradium.ai")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- README


def readme_usage() -> str:
    nodes = [node for node in walk() if node.path and not node.is_group]
    lines = ["| command | what it does |", "|---|---|"]
    for node in nodes:
        usage, summary = (part.replace("|", "\\|") for part in (node.usage(), node.summary()))
        lines.append(f"| `{usage}` | {summary} |")
    lines += ["", "Every option of every command: `gradium COMMAND --help`, or `man ./man/gradium.1`."]
    return "\n".join(lines).rstrip() + "\n"


def readme_exit_codes() -> str:
    lines = ["| code | meaning |", "|---|---|"]
    lines += [f"| {int(code)} | {meaning} |" for code, meaning in EXIT_CODE_MEANINGS.items()]
    return "\n".join(lines) + "\n"


def replace_block(text: str, markers: tuple[str, str], body: str) -> str:
    """`text` with only the lines between the two markers replaced (unchanged when they are missing)."""
    begin, end = markers
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return text
    head = text[: start + len(begin)]
    return head + "\n" + body + text[stop:]


def readme(text: str) -> str:
    text = replace_block(text, USAGE_MARKERS, readme_usage())
    return replace_block(text, EXIT_MARKERS, readme_exit_codes())


# ----------------------------------------------------------------------------- files


def generated(repo: Path = REPO) -> dict[Path, str]:
    """Every generated file and its expected content."""
    files = {repo / "completions" / f"{PROG}.{shell}": completion_script(shell) for shell in SHELLS}
    files[repo / "man" / f"{PROG}.1"] = man_page()
    readme_path = repo / "README.md"
    if readme_path.exists():
        files[readme_path] = readme(readme_path.read_text(encoding="utf-8"))
    return files


def stale(repo: Path = REPO) -> list[Path]:
    return [
        path
        for path, content in generated(repo).items()
        if not path.exists() or path.read_text(encoding="utf-8") != content
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path.relative_to(REPO)} (run python -m gradium_cli.devtools.gendocs)", file=sys.stderr)
        return 1 if outdated else 0
    for path, content in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
