"""`batch --dry-run`: every row checked, the cost and the files shown, nothing sent.

No connection is made and nothing is written. The plan goes to stdout (it is
what was asked for): one line per item, then the totals; `--json` gives one
JSON object instead. Malformed rows are listed on stderr and make the exit
code 2, so a manifest can be checked in CI before a long run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradium_cli.batch.estimate import credits, predicted_duration_s, speed_of
from gradium_cli.batch.manifest import Defaults, Item, Malformed, Manifest, Shard, entries
from gradium_cli.batch.state import StateFile
from gradium_cli.ui.env import Env


@dataclass
class Plan:
    items: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    characters: int = 0
    audio_s: float = 0.0
    done: int = 0

    def totals(self) -> dict[str, Any]:
        return {
            "items": len(self.items),
            "characters": self.characters,
            "credits": self.characters,
            "estimated_audio_s": round(self.audio_s, 1),
            "already_done": self.done,
            "malformed": len(self.malformed),
        }


def _describe(item: Item, done: bool) -> dict[str, Any]:
    return {
        "index": item.index,
        "line": item.line,
        "output": str(item.output),
        "timestamps": None if item.timestamps is None else str(item.timestamps),
        "characters": credits(item.text),
        "requests": len(item.chunks),
        "estimated_audio_s": round(predicted_duration_s(item.text, speed_of(item.voice)), 1),
        "already_done": done,
    }


def plan(manifest: Manifest, defaults: Defaults, shard: Shard, env: Env) -> Plan:
    """This shard's items as a run would see them (an item already done counts, and says so)."""
    result = Plan()
    state = StateFile(defaults.out_dir, shard)
    if defaults.out_dir.is_dir():
        state.load()
    for entry in entries(manifest, defaults, shard, env):
        if isinstance(entry, Malformed):
            result.malformed.append(entry)
            continue
        record = state.lookup(entry)
        done = record is not None and state.verify(entry, record)
        described = _describe(entry, done)
        result.items.append(described)
        result.characters += described["characters"]
        result.audio_s += described["estimated_audio_s"]
        result.done += done
    return result


def report(result: Plan, manifest_name: str, env: Env, json_out: bool, joined: Path | None = None) -> None:
    """The plan on stdout; `joined` is --concat's file, made once every item is done."""
    for bad in result.malformed:
        print(f"gradium: error: {manifest_name}:{bad.line}: {bad.message}", file=env.stderr, flush=True)
    if json_out:
        body = {"items": result.items, "malformed": [vars(bad) for bad in result.malformed], "totals": result.totals()}
        if joined is not None:
            body["concat"] = {"output": str(joined), "cue_sheet": str(joined.with_suffix(".cue"))}
        env.stdout.write((json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8"))
        env.stdout.flush()
        return
    lines = []
    for item in result.items:
        note = "  (already done)" if item["already_done"] else ""
        figures = f"{item['characters']} chars  ~{item['estimated_audio_s']:.1f} s"
        lines.append(f"{item['index']:>5}  {item['output']}  {figures}{note}")
    totals = result.totals()
    lines.append(
        f"{totals['items']} item{'s' if totals['items'] != 1 else ''}, {totals['characters']} characters "
        f"({totals['credits']} credits), about {totals['estimated_audio_s']:.1f} s of audio; "
        f"{totals['already_done']} already done; {totals['malformed']} malformed; nothing sent"
    )
    if joined is not None:
        lines.append(f"then joined into {joined} (cue sheet {joined.with_suffix('.cue')})")
    env.stdout.write(("\n".join(lines) + "\n").encode("utf-8", "replace"))
    env.stdout.flush()
