"""Lists and records on stdout in the shape the reader needs.

One decision, made here for every command: `--json` → JSON (keys in a fixed
order chosen by the caller); stdout a terminal → a rich table; stdout a pipe →
plain tab-separated lines without a header, so `cut -f2` and `sort` just work.
Rich is imported only when a terminal table is really drawn.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gradium_cli.ui.env import Env, get_env
from gradium_cli.ui.redact import redact
from gradium_cli.ui.wirelog import escape_control

OutputMode = Literal["json", "tsv", "rich"]


@dataclass(frozen=True)
class Column:
    """One column: `key` in each row, `header` on a terminal, an optional rich style."""

    key: str
    header: str
    style: str | None = None
    no_wrap: bool = False
    justify: Literal["left", "right", "center"] = "left"


def output_mode(json_out: bool, env: Env | None = None) -> OutputMode:
    env = env or get_env()
    if json_out or env.json:
        return "json"
    return "rich" if env.stdout_isatty else "tsv"


def cell_text(value: Any) -> str:
    """One value as a single line of printable text: TSV cells never contain tabs or newlines,
    and a server's string never drives the terminal (escape sequences, window titles, links
    become visible `\\x1b` text); known secrets and URL passwords are masked."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(cell_text(item) for item in value)
    text = str(value)
    text = text.replace("\t", " ").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return escape_control(redact(text))


def render_tsv(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    return "".join("\t".join(cell_text(row.get(c.key)) for c in columns) + "\n" for row in rows)


def render_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


def _console_text(renderables: Sequence[Any], env: Env, width: int | None) -> str:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=not env.no_color,
        no_color=env.no_color,
        width=width or shutil.get_terminal_size().columns,
        highlight=False,
        emoji=False,
    )
    for renderable in renderables:
        console.print(renderable)
    return buffer.getvalue()


def render_rich(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    env: Env | None = None,
    width: int | None = None,
    show_header: bool = True,
) -> str:
    from rich.table import Table
    from rich.text import Text

    table = Table(
        header_style="bold",
        box=None,
        pad_edge=False,
        show_header=show_header,
    )
    for column in columns:
        table.add_column(column.header, style=column.style, no_wrap=column.no_wrap, justify=column.justify)
    for row in rows:
        # Text(), not str: a voice named "[bold]" must print as typed, not as markup.
        table.add_row(*(Text(cell_text(row.get(c.key))) for c in columns))
    # The title is its own line: as a Table title rich would wrap it to the table's width.
    heading = [Text(title, style="bold")] if title else []
    return _console_text([*heading, table], env or get_env(), width)


def write_stdout(text: str, env: Env | None = None) -> None:
    env = env or get_env()
    env.stdout.write(text.encode("utf-8"))
    env.stdout.flush()


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    json_out: bool = False,
    json_rows: Any = None,
    title: str | None = None,
    empty: str | None = None,
    env: Env | None = None,
) -> None:
    """Print rows as JSON, a terminal table or TSV. `json_rows` overrides what --json prints.

    `empty` is said on stderr on a terminal when there are no rows (pipes get nothing).
    """
    env = env or get_env()
    mode = output_mode(json_out, env)
    if mode == "json":
        payload = json_rows if json_rows is not None else [{c.key: row.get(c.key) for c in columns} for row in rows]
        write_stdout(render_json(payload), env)
    elif mode == "tsv":
        write_stdout(render_tsv(rows, columns), env)
    elif not rows and empty:
        env.say(empty)
    else:
        write_stdout(render_rich(rows, columns, title=title, env=env), env)


def print_record(
    record: Mapping[str, Any],
    fields: Sequence[Column],
    *,
    json_out: bool = False,
    json_record: Any = None,
    env: Env | None = None,
) -> None:
    """One object: JSON, or `field<TAB>value` lines (aligned on a terminal)."""
    env = env or get_env()
    mode = output_mode(json_out, env)
    if mode == "json":
        write_stdout(render_json(json_record if json_record is not None else dict(record)), env)
        return
    rows = [{"field": f.key, "label": f.header, "value": record.get(f.key)} for f in fields]
    if mode == "tsv":
        write_stdout(render_tsv(rows, [Column("field", ""), Column("value", "")]), env)
        return
    columns = [Column("label", "", style="bold", no_wrap=True), Column("value", "")]
    write_stdout(render_rich(rows, columns, env=env, show_header=False), env)


__all__ = [
    "Column",
    "OutputMode",
    "cell_text",
    "output_mode",
    "print_record",
    "print_table",
    "render_json",
    "render_rich",
    "render_tsv",
    "write_stdout",
]
