"""`gradium devices`: the sound devices audio can play on."""

import json

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import guard
from gradium_cli.ui.env import get_env
from gradium_cli.ui.tables import write_stdout


def devices(json_out: o.JsonOpt = False) -> None:
    """List output devices (use the index or name with --device)."""
    from gradium_cli.audio.device import list_output_devices

    found = guard(list_output_devices)
    if json_out or get_env().json:
        write_stdout(json.dumps(found) + "\n")
        return
    lines = []
    for device in found:
        marker = "*" if device["default"] else " "
        lines.append(
            f"{marker} {device['index']:>3}  {device['name']}  "
            f"({device['channels']} ch, {device['default_samplerate']:.0f} Hz)\n"
        )
    write_stdout("".join(lines))
