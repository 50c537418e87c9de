"""The `gradium` Typer app: global options in a callback, one module per command."""

import os
from typing import Annotated

import typer

from gradium_cli import __version__
from gradium_cli.cli.auth import auth_app
from gradium_cli.cli.batch import batch
from gradium_cli.cli.config_cmd import config_app
from gradium_cli.cli.devices import devices
from gradium_cli.cli.doctor import doctor
from gradium_cli.cli.pronounce import pronounce_app
from gradium_cli.cli.say import say
from gradium_cli.cli.serve import serve
from gradium_cli.cli.stream import stream
from gradium_cli.cli.voices import voices_app
from gradium_cli.cli.ws_raw import ws_raw
from gradium_cli.ui.env import Env, set_env

app = typer.Typer(
    name="gradium",
    help="Gradium text-to-speech from the shell: speak, stream, manage voices, debug the protocol, serve offline.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    # Plain help: rich-formatted help costs ~300 ms of imports on every `--help`.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"gradium-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Wire log and details on stderr (keys masked)")
    ] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour (also NO_COLOR)")] = False,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Config profile for this run [env GRADIUM_PROFILE]")
    ] = None,
) -> None:
    """Gradium text-to-speech from the shell."""
    from gradium_cli.config import select_profile

    select_profile(profile)  # None resets: the same process may run several commands (tests)
    env = Env(quiet=quiet, verbose=verbose)
    env.no_color = env.no_color or no_color
    if env.no_color:
        os.environ["NO_COLOR"] = "1"
    set_env(env)


app.command(rich_help_panel="Speak")(say)
app.command(rich_help_panel="Speak")(stream)
app.command(rich_help_panel="Speak")(batch)
app.command(rich_help_panel="Audio")(devices)
app.add_typer(voices_app, name="voices", rich_help_panel="Manage")
app.add_typer(pronounce_app, name="pronounce", rich_help_panel="Manage")
app.command(rich_help_panel="Server")(serve)
app.command("ws-raw", rich_help_panel="Debug")(ws_raw)
app.add_typer(config_app, name="config", rich_help_panel="Setup")
app.add_typer(auth_app, name="auth", rich_help_panel="Setup")
app.command(rich_help_panel="Setup")(doctor)


def main() -> None:
    app()
