"""`json_config` voice settings (PROTOCOL.md §6): ranges, validation, speed mapping.

Shared by the client (which builds the config from flags) and the local server
(which validates it and maps it onto the engine), so both agree on one table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SettingRange:
    low: float
    high: float
    default: float
    meaning: str


NUMERIC_SETTINGS: dict[str, SettingRange] = {
    "temp": SettingRange(0.0, 1.4, 0.7, "sampling temperature; 0 is deterministic"),
    "cfg_coef": SettingRange(1.0, 4.0, 2.0, "voice similarity"),
    "padding_bonus": SettingRange(-4.0, 4.0, 0.0, "speed: negative is faster, positive slower"),
}

# 0.5x to 2x speed maps onto padding_bonus +4 to -4 (as community clients do), on a log
# scale so that 2x faster and 2x slower sit symmetrically around 0.
MIN_SPEED = 0.5
MAX_SPEED = 2.0


def speed_to_padding_bonus(speed: float) -> float:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return round(-4.0 * math.log2(speed), 3)


def padding_bonus_to_speed(padding_bonus: float) -> float:
    return float(2.0 ** (-padding_bonus / 4.0))


def validate_json_config(config: dict[str, Any]) -> list[str]:
    """Problems with known keys (wrong type or out of range); unknown keys are ignored (§6)."""
    problems = []
    for key, spec in NUMERIC_SETTINGS.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"json_config '{key}' must be a number")
        elif not spec.low <= value <= spec.high:
            problems.append(f"json_config '{key}' must be between {spec.low} and {spec.high}, got {value}")
    rules = config.get("rewrite_rules")
    if rules is not None and not isinstance(rules, str):
        problems.append("json_config 'rewrite_rules' must be a string such as \"en\"")
    # The server looks the id up: a list or an object there was a TypeError (unhashable), not an answer.
    dictionary = config.get("pronunciation_id")
    if dictionary is not None and not isinstance(dictionary, str):
        problems.append("json_config 'pronunciation_id' must be a string")
    return problems
