"""The checks behind `gradium doctor`, each a status and a one-line detail."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradium_cli.backend import BackendOptions, open_backend
from gradium_cli.errors import ExitCode, GradiumError
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.ui.env import get_env

PACKAGES = ("gradium-cli", "typer", "httpx", "websockets", "numpy", "soundfile", "sounddevice", "rich")
PROBE_TEXT = "Hello."
MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
COLORS = {"ok": "green", "warn": "yellow", "fail": "red"}


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    essential: bool = True
    exit_code: int = 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def check_config() -> Check:
    from gradium_cli.config import active_profile, config_path, permission_problem, read_config

    path = config_path()
    profile = active_profile()
    if not path.exists():
        return Check("config", "ok", f"{path} (not created yet; profile {profile})")
    problem = permission_problem(path)
    if problem:
        return Check("config", "fail", problem, exit_code=ExitCode.CONFIG)
    try:
        sections = read_config(path).sections()
    except GradiumError as error:
        return Check("config", "fail", error.message, exit_code=error.exit_code)
    known = "" if profile in sections or profile == "default" else f"; profile {profile} is not in the file"
    mode = f"{path.stat().st_mode & 0o777:04o}"
    return Check("config", "ok" if not known else "warn", f"{path} (mode {mode}, profile {profile}){known}")


def check_settings(profile: str | None) -> Check:
    """Every setting the environment or the config file gives, checked as a command would
    (a command stops at the first bad one; doctor names them all)."""
    from gradium_cli.config import ENV_VARS, KNOWN_SETTINGS, configured

    problems = []
    for name in KNOWN_SETTINGS:
        if name == "api-key":
            continue  # the "api key" row
        try:
            configured(name, profile)
        except GradiumError as error:
            problems.append(error.message)
    if problems:
        return Check("settings", "fail", "; ".join(problems), exit_code=ExitCode.CONFIG)
    given = [ENV_VARS[name] for name in KNOWN_SETTINGS if os.environ.get(ENV_VARS[name])]
    detail = f"valid; from the environment: {', '.join(given)}" if given else "valid; none from the environment"
    return Check("settings", "ok", detail)


def check_key(options: BackendOptions) -> tuple[Check, bool]:
    """The key in use (masked) and its source; the flag says whether a configured server is in use."""
    from gradium_cli.config import mask_secret, resolve

    try:
        key = resolve("api-key", options.api_key, options.profile)
    except GradiumError as error:
        return Check("api key", "fail", error.message, exit_code=error.exit_code), False
    try:
        base = resolve("base-url", options.base_url, options.profile)
    except GradiumError as error:  # its own row: under "api key" it read as a problem with the key
        return Check("base url", "fail", error.message, exit_code=error.exit_code), False
    if options.local or (not key.value and not base.value):
        return Check("api key", "ok", "not needed: the built-in offline engine is in use"), False
    if not key.value:
        return Check("api key", "warn", f"not set (server from {base.source}); fine for `gradium serve`"), True
    return Check("api key", "ok", f"{mask_secret(key.value)} (from {key.source})"), True


async def check_server(endpoint: Endpoint) -> Check:
    from gradium_cli.cli.auth import fetch_credits

    started = time.monotonic()
    try:
        credits = await fetch_credits(endpoint)
    except GradiumError as error:
        return Check("server", "fail", f"{endpoint.base_url}: {error.message}", exit_code=error.exit_code)
    detail = f"{endpoint.base_url} answered in {_ms(time.monotonic() - started)}"
    if endpoint.api_key:
        detail += "; key accepted"
    if credits and "remaining_credits" in credits:
        detail += f"; {credits['remaining_credits']:,} credits left"
    return Check("server", "ok", detail)


async def check_websocket(endpoint: Endpoint, voice: str | None) -> Check:
    """One tiny request: connect, `ready`, first audio, end of stream."""
    from gradium_cli.protocol import messages as m
    from gradium_cli.transport.rest import RestClient
    from gradium_cli.transport.ws import TtsSocket
    from gradium_cli.ui.wirelog import stderr_wire_log
    from gradium_cli.voice_settings import VoiceOptions, build_setup

    env = get_env()
    try:
        async with RestClient(endpoint) as rest:
            setup = await build_setup(VoiceOptions(voice=voice), "pcm", rest if voice else None)
        started = time.monotonic()
        ready = first_audio = None
        hook = stderr_wire_log(env.debug) if env.verbose else None
        async with TtsSocket(endpoint, hook) as sock:
            connected = time.monotonic() - started
            async for message in sock.request(setup, PROBE_TEXT):
                now = time.monotonic() - started
                if isinstance(message, m.Ready) and ready is None:
                    ready = now
                elif isinstance(message, m.Audio) and first_audio is None:
                    first_audio = now
    except GradiumError as error:
        return Check("websocket", "fail", f"{endpoint.ws_url()}: {error.message}", exit_code=error.exit_code)
    if ready is None or first_audio is None:
        return Check("websocket", "fail", "the request ended without audio", exit_code=ExitCode.SERVER)
    used = f" (voice {voice})" if voice else ""
    return Check(
        "websocket",
        "ok",
        f"connect {_ms(connected)}, ready {_ms(ready)}, first audio {_ms(first_audio)}{used}",
    )


def check_audio() -> Check:
    try:
        from gradium_cli.audio.device import list_output_devices

        devices = list_output_devices()
    except GradiumError as error:
        return Check("audio", "warn", f"none: {error.message}", essential=False, exit_code=error.exit_code)
    except Exception as exc:  # PortAudio fails in many ways; doctor reports, never crashes
        return Check("audio", "warn", f"none: {exc}", essential=False, exit_code=ExitCode.AUDIO)
    if not devices:
        return Check("audio", "warn", "none (playback unavailable; files and pipes still work)", essential=False)
    default = next((d["name"] for d in devices if d["default"]), devices[0]["name"])
    return Check("audio", "ok", f"{len(devices)} output device(s), default {default}", essential=False)


def espeak_version() -> str:
    import ctypes

    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    raw = lib.espeak_Info(None)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else "unknown version"


def check_engine(essential: bool) -> Check:
    try:
        from gradium_cli.server.engine import EngineVoice, get_engine

        engine = get_engine()
        synthesis = engine.synthesize("hello", EngineVoice("en"))
        if not len(synthesis.samples):
            raise RuntimeError("no audio for 'hello'")
        detail = (
            f"eSpeak NG {espeak_version()}, {len(engine.list_voices())} voices, "
            f"'hello' → {synthesis.duration_s:.2f} s of audio"
        )
    except Exception as exc:  # a missing library raises OSError, a broken one anything
        status = "fail" if essential else "warn"
        return Check("espeak-ng", status, f"unavailable: {exc}", essential=essential, exit_code=ExitCode.SERVER)
    return Check("espeak-ng", "ok", detail, essential=essential)


def check_resident_engine() -> Check:
    """What commands with no key leave running: the resident engine (server/resident.py)."""
    from gradium_cli.transport.engine_process import (
        LINGER_ENV,
        READY_ENV,
        linger_seconds,
        ready_timeout_s,
        resident_engine,
    )

    state, path, pid = resident_engine()
    if state == "running":
        which = f" (pid {pid})" if pid is not None else ""
        detail = f"running on {path}{which}; ends after {linger_seconds():g} s without a command ({LINGER_ENV})"
    elif state == "stopped":
        try:
            wait = f"{ready_timeout_s():g} s"
        except ValueError as exc:
            wait = f"(none: {exc})"
        detail = (
            f"stopped (pid {pid}, by SIGSTOP): each command with no key waits {wait} "
            f"({READY_ENV}) for it, then starts its own engine; `kill -CONT {pid}` resumes it, `kill {pid}` ends it"
        )
        return Check("resident engine", "warn", detail, essential=False)
    elif state == "idle":
        detail = "not running; the next command with no key starts one"
    elif state == "off":
        detail = f"off ({LINGER_ENV}=0): each command with no key starts its own engine process"
    else:
        detail = "unavailable (no private runtime dir): each command with no key starts its own engine process"
    return Check("resident engine", "ok", detail, essential=False)


def is_this_tool(script: Path) -> bool:
    """Whether a console script runs gradium-cli (pip writes its entry point into the script)."""
    try:
        with script.open("rb") as handle:
            return b"gradium_cli" in handle.read(4096)
    except OSError:
        return False


def check_command() -> Check:
    """Which `gradium` a shell runs: the gradium SDK installs one too, and the last installed wins."""
    import shutil

    found = shutil.which("gradium")
    if found is None:
        return Check("command", "warn", "no `gradium` on PATH; `gradium-cli` runs this tool", essential=False)
    if is_this_tool(Path(found)):
        return Check("command", "ok", f"`gradium` on PATH is this tool ({found})", essential=False)
    return Check(
        "command",
        "warn",
        f"`gradium` on PATH ({found}) is not this tool (the gradium SDK's?): run `gradium-cli`, or reinstall "
        "this tool after the SDK (pip install --force-reinstall --no-deps gradium-cli)",
        essential=False,
    )


def check_versions() -> list[Check]:
    from importlib import metadata

    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    python = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    return [Check("python", "ok", python, essential=False), Check("packages", "ok", ", ".join(versions), False)]


async def diagnose(options: BackendOptions) -> list[Check]:
    from gradium_cli.config import configured

    checks = [check_config()]
    if checks[0].status != "fail":  # an unreadable file would fail every setting again
        checks.append(check_settings(options.profile))
    key_check, remote = check_key(options)
    checks.append(key_check)
    if key_check.status != "fail":
        try:
            voice = configured("voice", options.profile)
            with open_backend(options) as endpoint:
                server = await check_server(endpoint)
                checks.append(server)
                if server.status == "ok":
                    checks.append(await check_websocket(endpoint, voice))
        except GradiumError as error:
            checks.append(Check("server", "fail", error.message, exit_code=error.exit_code))
    checks.append(check_command())
    checks.append(check_audio())
    checks.append(check_engine(essential=not remote))
    if not remote:
        checks.append(check_resident_engine())
    checks.extend(check_versions())
    return checks


def render_text(checks: list[Check], color: bool = False) -> str:
    import typer

    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        mark = MARKS[check.status]
        if color:
            mark = typer.style(mark, fg=COLORS[check.status], bold=True)
        lines.append(f"{mark} {check.name.ljust(width)}  {check.detail}")
    return "\n".join(lines) + "\n"


def render_json(checks: list[Check]) -> str:
    failed = [check for check in checks if check.status == "fail" and check.essential]
    payload: dict[str, Any] = {
        "ok": not failed,
        "exit_code": int(failed[0].exit_code) if failed else 0,
        "checks": [{**asdict(check), "exit_code": int(check.exit_code)} for check in checks],
    }
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"
