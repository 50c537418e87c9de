"""`gradium doctor`: check the set-up end to end and say what is wrong, one line per check.

Essential checks (config, key, server, WebSocket, and the eSpeak NG engine when
the offline engine is in use) decide the exit code: the first failure's code,
else 0. Audio devices only warn: files and pipes work without them.
"""

from typing import TYPE_CHECKING, Annotated

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import run
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions


@o.with_backend(timeout=10.0)
def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="The checks as one JSON object on stdout")] = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Check the config file, the API key, the server and its latency, audio devices and the eSpeak NG engine.

    Makes one tiny real TTS request ("Hello."). Exits 0 when every essential
    check passes, else with the first failing check's exit code.

    \b
    gradium doctor
    gradium doctor --json | jq '.checks[] | select(.status != "ok")'
    """
    from gradium_cli.cli.doctor_core import diagnose, render_json, render_text

    env = get_env()
    report = run(diagnose(backend))
    if json_out or env.json:
        env.stdout.write(render_json(report).encode("utf-8"))
    else:
        color = env.stdout_isatty and not env.no_color
        env.stdout.write(render_text(report, color=color).encode("utf-8"))
    env.stdout.flush()
    failed = [check for check in report if check.status == "fail" and check.essential]
    if failed:
        env.say(f"gradium doctor: {len(failed)} essential check(s) failed")
        raise typer.Exit(int(failed[0].exit_code))
    env.say("gradium doctor: all essential checks passed")
