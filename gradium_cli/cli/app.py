"""The `gradium` Typer app: global options in a callback, one module per command."""

import errno
import os
import sys
from typing import Annotated, NoReturn

import typer

from gradium_cli import __version__
from gradium_cli.cli.lazy_group import LazyGroup
from gradium_cli.cli.typer_app import plain_typer

app = plain_typer(
    name="gradium",
    help="Gradium text-to-speech from the shell: speak, stream, manage voices, debug the protocol, serve offline.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    # The commands themselves are listed in commands.py and loaded on use.
    cls=LazyGroup,
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
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout, errors included")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour (also NO_COLOR)")] = False,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Config profile for this run [env GRADIUM_PROFILE]")
    ] = None,
) -> None:
    """Gradium text-to-speech from the shell.

    The global options work after the command too: `gradium say hi -q`.
    """
    from gradium_cli.config import select_profile
    from gradium_cli.ui.env import Env, set_env

    select_profile(profile)  # None resets: the same process may run several commands (tests)
    env = Env(quiet=quiet, verbose=verbose, json=json_out)
    env.no_color = env.no_color or no_color
    if env.no_color:
        os.environ["NO_COLOR"] = "1"
    set_env(env)


def stdout_failed_while_parsing(error: OSError) -> NoReturn:
    """`--help` or `--version` (printed while the arguments are parsed, before any command's
    own handling) to a full disk or a reader that went away: as for any command's output,
    one line and exit 9, or exit 0. Any other error goes on as it was."""
    from gradium_cli.ui.env import discard_stdout, stdout_failure

    if isinstance(error, BrokenPipeError):
        discard_stdout()
        sys.exit(0)
    if error.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
        raise error
    failure = stdout_failure(error)
    print(f"gradium: error: {failure.message}", file=sys.stderr)
    sys.exit(int(failure.exit_code))


def main() -> None:
    from gradium_cli.ui.env import reopen_closed_std_fds

    reopen_closed_std_fds()
    # Not standalone: a usage error becomes one line and a hint here, not Click's three-line block.
    try:
        code = app(standalone_mode=False)
    except OSError as error:
        stdout_failed_while_parsing(error)
    except typer.Abort:
        print("gradium: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        from gradium_cli.cli.runtime import usage_failure

        usage_failure(error)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
