"""Settings resolution: flag > environment > config-file profile > default.

The file is INI (configparser, standard library) at the platform config dir
(`GRADIUM_CONFIG_DIR` overrides it; `XDG_CONFIG_HOME` is honoured through
platformdirs), one section per profile, written with mode 0600 because it holds
the API key. The profile is `--profile` (a command's or the global one), else
`GRADIUM_PROFILE`, else `default`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gradium_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import configparser

DEFAULT_PROFILE = "default"
REGION_URLS = {
    "default": "https://api.gradium.ai/api/",
    "eu": "https://eu.api.gradium.ai/api/",
    "us": "https://us.api.gradium.ai/api/",
}

# Setting name → environment variable (every setting has one).
ENV_VARS = {
    "api-key": "GRADIUM_API_KEY",
    "base-url": "GRADIUM_BASE_URL",
    "region": "GRADIUM_REGION",
    "voice": "GRADIUM_VOICE",
    "model": "GRADIUM_MODEL",
    "format": "GRADIUM_FORMAT",
    "timeout": "GRADIUM_TIMEOUT",
    "cache": "GRADIUM_CACHE",
    "cache-size": "GRADIUM_CACHE_SIZE",
    "markdown": "GRADIUM_MARKDOWN",
    "offline-notice": "GRADIUM_OFFLINE_NOTICE",
}
KNOWN_SETTINGS = tuple(ENV_VARS)
SETTING_HELP = {
    "api-key": "API key sent as x-api-key (shown masked)",
    "base-url": "API root, e.g. http://127.0.0.1:8765/api/ (overrides region)",
    "region": "hosted region: eu or us (default: georouted)",
    "voice": "default voice id or name for say, stream and batch",
    "model": "default model name",
    "format": "default audio format when writing to stdout (a file's extension decides otherwise)",
    "timeout": "default --timeout in seconds",
    "cache": "on or off: reuse audio made before in say and batch (--cache/--no-cache)",
    "cache-size": "the request cache's cap, e.g. 500M or 2G (default 1G); least recently used entries go first",
    "markdown": "on or off: speak markdown as prose in say, stream and batch (default: on for stream and .md files)",
    "offline-notice": "on or off: the once-a-day line on a terminal saying the offline engine speaks (default on)",
}
SECRET_SETTINGS = frozenset({"api-key"})

# Set by `--profile` (the global option or a command's); beats GRADIUM_PROFILE.
_selected_profile: str | None = None
_seen_paths: set[Path] = set()


def config_dir() -> Path:
    override = os.environ.get("GRADIUM_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir  # lazy: not needed on most runs with flags

    return Path(user_config_dir("gradium", appauthor=False))


def config_path() -> Path:
    return config_dir() / "config.ini"


def mask_secret(value: str | None) -> str:
    """`gsk_…abcd`: enough to tell keys apart, never enough to use one."""
    if not value:
        return "(not set)"
    if len(value) <= 8:
        return "…" + "*" * 4
    prefix = value.split("_", 1)[0] + "_" if "_" in value[:6] else ""
    return f"{prefix}…{value[-4:]}"


def select_profile(name: str | None) -> None:
    """Make `name` the profile for this process (None: back to GRADIUM_PROFILE / default)."""
    global _selected_profile
    _selected_profile = name or None


def active_profile(flag: str | None = None) -> str:
    return flag or _selected_profile or os.environ.get("GRADIUM_PROFILE") or DEFAULT_PROFILE


def check_setting(name: str) -> str:
    """The setting's canonical name, or a usage error listing the valid ones."""
    canonical = name.strip().lower().replace("_", "-")
    if canonical not in KNOWN_SETTINGS:
        raise UsageError(f"unknown setting '{name}' (choose from {', '.join(KNOWN_SETTINGS)})")
    return canonical


def check_value(name: str, value: str) -> str:
    """A value fit to store for `name`, or a usage error saying why not."""
    value = value.strip()
    if not value:
        raise UsageError(f"empty value for {name}", hint=f"use `gradium config unset {name}` to remove it")
    if "\n" in value or "\r" in value:
        raise UsageError(f"the value for {name} must be one line")
    if name == "api-key":
        check_api_key(value, "typed")
    if name == "base-url":
        check_base_url(value, "typed")
    if name == "region" and value not in REGION_URLS:
        raise UsageError(f"unknown region '{value}' (choose eu or us)")
    if name == "timeout":
        try:
            seconds = float(value)
        except ValueError:
            raise UsageError(f"timeout must be a number of seconds, not '{value}'") from None
        if not seconds >= 0.1:
            raise UsageError("timeout must be at least 0.1 seconds")
    if name == "format":
        from gradium_cli.audio.plan import LOCALLY_ENCODED
        from gradium_cli.protocol.formats import format_names, lookup_format

        if lookup_format(value) is None and value not in LOCALLY_ENCODED:
            names = ", ".join([*format_names(), *LOCALLY_ENCODED])
            raise UsageError(f"unknown format '{value}' (choose from {names})")
    if name in ("cache", "markdown", "offline-notice"):
        from gradium_cli.cache import parse_switch

        parse_switch(name, value)
    if name == "cache-size":
        from gradium_cli.cache import parse_size

        parse_size(value)
    return value


def _mode(path: Path) -> int | None:
    """The file's permission bits; None when there is no regular file (a directory there is
    a read error of its own, not a question of who may read it)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else None


def writable_by_others(path: Path) -> bool:
    """As ssh does for keys: a file others can write may hold a key they planted; its key is not used."""
    mode = _mode(path)
    return mode is not None and bool(mode & 0o022)


def permission_problem(path: Path) -> str | None:
    """Why the file's mode is unsafe for a key (readable or writable by others), or None."""
    mode = _mode(path)
    if mode is None:
        return None
    if mode & 0o022:
        return f"{path} is writable by others (mode {mode:04o}): its API key is not used; run `chmod 600 {path}`"
    if mode & 0o077:
        return f"{path} has mode {mode:04o}, readable by others; run `chmod 600 {path}`"
    return None


def _first_read(path: Path) -> None:
    """Once per file and process: say which file is read (-v), warn when others can read it."""
    if path in _seen_paths:
        return
    _seen_paths.add(path)
    from gradium_cli.ui.env import get_env

    env = get_env()
    if not path.exists():
        env.debug(f"config {path} (none)")
        return
    env.debug(f"config {path} (profile {active_profile()})")
    problem = permission_problem(path)
    if problem:
        env.say(f"gradium: warning: {problem}")


def read_config(path: Path | None = None, *, announce: bool = True) -> configparser.ConfigParser:
    """The file's settings; `announce=False` reads it without the first read's -v line and
    warning (a look ahead before the command's options have set up output)."""
    import configparser  # lazy: a run with flags and env only never reads the file

    parser = configparser.ConfigParser(interpolation=None)
    path = path or config_path()
    if announce:
        _first_read(path)
    if path.exists():
        try:
            # Not parser.read(path): it skips a file it cannot open (a directory, mode 000) as if absent.
            with open(path, encoding="utf-8") as file:
                parser.read_file(file)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", hint="fix or delete the file") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot read {path}: {reason}", hint="fix or delete the file") from None
    return parser


def write_config(parser: configparser.ConfigParser) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    try:
        # Created 0600 from the start: the key must never sit world-readable, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # an old temp file may have had another mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            parser.write(handle)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def set_value(name: str, value: str, profile: str | None = None) -> Path:
    """Store one setting in the profile's section (the file is created 0600)."""
    parser = read_config()
    section = active_profile(profile)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, name, value)
    return write_config(parser)


def unset_value(name: str, profile: str | None = None) -> bool:
    """Remove one setting; False when it was not set. An emptied profile section goes too."""
    path = config_path()
    if not path.exists():
        return False
    parser = read_config(path)
    section = active_profile(profile)
    if not parser.has_section(section) or not parser.remove_option(section, name):
        return False
    if not parser.options(section):
        parser.remove_section(section)
    write_config(parser)
    return True


def profiles() -> list[str]:
    return read_config().sections()


@dataclass(frozen=True)
class Resolved:
    value: str | None
    source: str  # "flag", "env", "config", "default"


def resolve(
    name: str,
    flag_value: str | None = None,
    profile: str | None = None,
    default: str | None = None,
    *,
    announce: bool = True,
) -> Resolved:
    found = _resolve(name, flag_value, profile, default, announce=announce)
    if name == "api-key" and found.value is not None:
        check_api_key(found.value, found.source, profile)
    if name == "base-url" and found.value:
        check_base_url(found.value, found.source, profile)
    return found


def _resolve(
    name: str, flag_value: str | None, profile: str | None, default: str | None, *, announce: bool
) -> Resolved:
    if flag_value is not None:
        return Resolved(flag_value, "flag")
    env = ENV_VARS.get(name)
    if env and os.environ.get(env):
        return Resolved(os.environ[env], "env")
    parser = read_config(announce=announce)
    section = active_profile(profile)
    # read_config has said why, once: the key of a file others can write is not used.
    unsafe = name in SECRET_SETTINGS and writable_by_others(config_path())
    if parser.has_option(section, name) and not unsafe:
        return Resolved(parser.get(section, name), "config")
    return Resolved(default, "default")


def check_api_key(key: str, source: str, profile: str | None = None) -> None:
    """A key travels in an HTTP header, so it is printable ASCII with no spaces. Any other is
    refused before it is sent (the header library's own error would print the key), named
    by where it came from and never shown."""
    if all("!" <= char <= "~" for char in key):
        return
    problem = "holds characters no key has (a key is printable ASCII, no spaces)"
    if source in ("flag", "typed"):
        how = "given with --api-key" if source == "flag" else "given"
        raise UsageError(f"the API key {how} {problem}")
    where = _where_set("api-key", source, profile)
    raise ConfigError(f"the API key in {where} {problem}", hint="set it again: `gradium config set api-key`")


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be an API root, or None.

    Else the URL parsers fail deep in a request (a traceback: `http://[::1`, a port past
    65535), or an unknown scheme becomes a host name (`ftp://x/` → `https://ftp://x/`).
    """
    from urllib.parse import urlsplit

    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() not in ("http", "https", "ws", "wss"):
        return f"'{scheme}://' is not a scheme it can have (http://, https://, ws:// or wss://)"
    try:
        parts = urlsplit(url if sep else f"https://{url}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        return str(exc)
    return None if parts.hostname else "it names no host"


def check_base_url(url: str, source: str, profile: str | None = None) -> None:
    """A base URL fit to connect to, or an error named by where it came from (the URL masked)."""
    problem = base_url_problem(url)
    if problem is None:
        return
    from gradium_cli.ui.redact import mask_url_passwords

    shown = mask_url_passwords(url)
    if source in ("flag", "typed"):
        raise UsageError(f"base URL {shown}: {problem}")
    where = _where_set("base-url", source, profile)
    raise ConfigError(f"{where}: base URL {shown}: {problem}", hint=_how_to_fix("base-url", source))


def _where_set(name: str, source: str, profile: str | None) -> str:
    """Where a setting of source "env" or "config" was set, for an error that names it."""
    return ENV_VARS[name] if source == "env" else f"{config_path()} [{active_profile(profile)}]"


def _how_to_fix(name: str, source: str) -> str:
    """The hint of an error about a setting of source "env" or "config"."""
    return f"unset {ENV_VARS[name]} or fix it" if source == "env" else f"`gradium config unset {name}`, or set it again"


def configured(name: str, profile: str | None = None) -> str | None:
    """A setting's value from the environment or the config file, None when neither sets it
    (or sets it empty). A value `config set` would refuse is a configuration problem
    (exit 3) that names where it was set: a flag's bad value is a usage error instead."""
    found = resolve(name, None, profile)
    if found.value is None or not found.value.strip():
        return None
    try:
        return check_value(name, found.value)
    except UsageError as exc:
        where = _where_set(name, found.source, profile)
        raise ConfigError(f"{where}: {exc.message}", hint=_how_to_fix(name, found.source)) from None
