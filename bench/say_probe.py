"""`gradium` exactly as the console script runs it, plus two bench probes.

`.venv/bin/gradium` is `from gradium_cli.cli.app import main; sys.exit(main())`;
this file does the same, and on exit writes one line to stderr:

    GRADIUM_BENCH_PROBE {"first_audio_since_start_s": ..., "modules": [...]}

* first_audio_since_start_s: time.time() at the first non-priming audio
  message the client handles, minus $GRADIUM_BENCH_T0 (set by the harness
  just before spawning). `gradium say` itself only reports times since its
  request started, and bench code may not change it.
* modules (only with GRADIUM_BENCH_MODULES=1): top-level names in sys.modules
  at exit, to check what a command imported.

The hook wraps `Collector.handle` when `gradium_cli.synthesis` is first
imported (a meta-path finder), so import order and cost stay as in the real
command: nothing of gradium_cli is imported here ahead of time.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import json
import os
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader

_TARGET = "gradium_cli.synthesis"
_state: dict[str, Any] = {"first_audio_wall": None}


def _since_start(wall: float | None) -> float | None:
    t0 = os.environ.get("GRADIUM_BENCH_T0")
    return None if wall is None or not t0 else round(wall - float(t0), 4)


def _patch(module: ModuleType) -> None:
    collector = module.Collector
    original = collector.handle
    audio_type = module.m.Audio

    def handle(self: Any, message: Any) -> None:
        if _state["first_audio_wall"] is None and isinstance(message, audio_type) and message.stop_s > message.start_s:
            _state["first_audio_wall"] = time.time()
        original(self, message)

    collector.handle = handle


class _Loader:
    """Runs the real loader, then patches the module (duck-typed: importlib.abc costs imports)."""

    def __init__(self, inner: Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder:
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
        return spec


def _report() -> None:
    out: dict[str, Any] = {"first_audio_since_start_s": _since_start(_state["first_audio_wall"])}
    if os.environ.get("GRADIUM_BENCH_MODULES") == "1":
        out["modules"] = sorted({name.split(".")[0] for name in sys.modules})
        out["gradium_cli_modules"] = sorted(n for n in sys.modules if n.startswith("gradium_cli"))
    print("GRADIUM_BENCH_PROBE " + json.dumps(out), file=sys.stderr, flush=True)


def main() -> None:
    sys.meta_path.insert(0, _Finder())
    atexit.register(_report)
    from gradium_cli.cli.app import main as gradium_main

    sys.argv[0] = "gradium"
    sys.exit(gradium_main())


if __name__ == "__main__":
    main()
