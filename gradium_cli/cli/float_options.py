"""Every float option refuses `nan`: Click's float types (and their min/max ranges) take it.

`float("nan")` parses, and NaN passes every range check (all its comparisons are false), so
`--start nan`, `--timeout nan` or `--gap nan` reached the command: a traceback converting it to
an integer or writing it as JSON, or a wait "for nan s". No option means anything by it, so it
is one usage error (exit 2) at parsing, like any other bad value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_FLOAT_TYPES = ("float", "float range")  # the `name` of Click's FloatParamType and FloatRange


def refuse_nan(command: Any) -> None:
    """Make each float option of `command` (and of every subcommand of a group) refuse NaN."""
    for sub in getattr(command, "commands", {}).values():
        refuse_nan(sub)
    for param in getattr(command, "params", []):
        kind = param.type
        if getattr(kind, "name", None) in _FLOAT_TYPES and not getattr(kind, "refuses_nan", False):
            kind.convert = _numbers_only(kind, kind.convert)
            kind.refuses_nan = True


def _numbers_only(kind: Any, convert: Callable[..., Any]) -> Callable[..., Any]:
    def checked(value: Any, param: Any, ctx: Any) -> Any:
        number = convert(value, param, ctx)
        if isinstance(number, float) and math.isnan(number):
            kind.fail(f"{value!r} is not a number", param, ctx)
        return number

    return checked
