"""Settings resolution: flag > environment > config-file profile > default.

The file is INI (configparser, standard library) at the platform config dir,
one section per profile, written with mode 0600 because it holds the API key.
"""

from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROFILE = "default"
REGION_URLS = {
    "default": "https://api.gradium.ai/api/",
    "eu": "https://eu.api.gradium.ai/api/",
    "us": "https://us.api.gradium.ai/api/",
}

# Setting name → environment variable.
ENV_VARS = {
    "api-key": "GRADIUM_API_KEY",
    "base-url": "GRADIUM_BASE_URL",
    "region": "GRADIUM_REGION",
    "voice": "GRADIUM_VOICE",
    "model": "GRADIUM_MODEL",
}
KNOWN_SETTINGS = (*ENV_VARS, "format", "timeout")


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


def active_profile(flag: str | None = None) -> str:
    return flag or os.environ.get("GRADIUM_PROFILE") or DEFAULT_PROFILE


def read_config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    path = config_path()
    if path.exists():
        parser.read(path, encoding="utf-8")
    return parser


def write_config(parser: configparser.ConfigParser) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start: the key must never sit world-readable, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        parser.write(handle)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Resolved:
    value: str | None
    source: str  # "flag", "env", "config", "default"


def resolve(
    name: str, flag_value: str | None = None, profile: str | None = None, default: str | None = None
) -> Resolved:
    if flag_value is not None:
        return Resolved(flag_value, "flag")
    env = ENV_VARS.get(name)
    if env and os.environ.get(env):
        return Resolved(os.environ[env], "env")
    parser = read_config()
    section = active_profile(profile)
    if parser.has_option(section, name):
        return Resolved(parser.get(section, name), "config")
    return Resolved(default, "default")
