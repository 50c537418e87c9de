"""`gradium config`: read and write settings in the config file, one section per profile.

`get` and `list` show what commands would use without flags (environment, then
the profile in the file), and where each value comes from. The API key is
always masked, except by `get api-key --reveal`.
"""

from typing import Annotated, Any

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.complete import complete_setting, complete_setting_value
from gradium_cli.cli.runtime import guard
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.ui.env import get_env

config_app = plain_typer(
    name="config",
    help="Settings in the config file: api-key, base-url, region, voice, model, format, timeout, cache, cache-size.",
    no_args_is_help=True,
)

NameArg = Annotated[
    str,
    typer.Argument(
        help="Setting: api-key, base-url, region, voice, model, format, timeout, cache or cache-size",
        show_default=False,
        metavar="NAME",
        autocompletion=complete_setting,
    ),
]


def _shown(name: str, value: str | None, reveal: bool = False) -> str | None:
    from gradium_cli.config import SECRET_SETTINGS, mask_secret

    if value is None or reveal or name not in SECRET_SETTINGS:
        return value
    return mask_secret(value)


def _print(text: str) -> None:
    from gradium_cli.ui.tables import write_stdout

    write_stdout(text if text.endswith("\n") else text + "\n")


@config_app.command("set")
def set_setting(
    name: NameArg,
    value: Annotated[
        str | None,
        typer.Argument(
            help="The value; for api-key omit it to type it hidden or pipe it",
            show_default=False,
            autocompletion=complete_setting_value,
        ),
    ] = None,
    profile: o.ProfileOpt = None,
) -> None:
    """Store a setting in the active profile (the file is written with mode 0600).

    \b
    gradium config set voice Emma
    gradium config set api-key                # asks without echo; or: pass | gradium config set api-key
    gradium config set base-url http://127.0.0.1:8765/api/ --profile local
    """

    def body() -> None:
        from gradium_cli.cli.auth import read_key
        from gradium_cli.config import active_profile, check_setting, check_value, set_value
        from gradium_cli.errors import UsageError

        setting = check_setting(name)
        if value is None:
            if setting != "api-key":
                raise UsageError(f"missing VALUE for {setting}")
            given = read_key()
        else:
            given = value
        path = set_value(setting, check_value(setting, given))
        get_env().say(f"gradium: {setting} = {_shown(setting, given)} in profile {active_profile()} ({path})")

    guard(body)


@config_app.command("get")
def get_setting(
    name: NameArg,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Print the API key in full (it is masked otherwise)")
    ] = False,
    json_out: o.JsonOpt = False,
    profile: o.ProfileOpt = None,
) -> None:
    """Print the value commands would use without flags (environment, else the profile); exit 1 if unset.

    \b
    gradium config get voice
    gradium config get api-key --reveal | pbcopy
    """

    def body() -> int:
        from gradium_cli.config import active_profile, check_setting, resolve
        from gradium_cli.ui.tables import render_json

        setting = check_setting(name)
        found = resolve(setting)
        shown = _shown(setting, found.value, reveal)
        if json_out or get_env().json:
            source = found.source if found.value is not None else "unset"
            record = {"name": setting, "value": shown, "source": source, "profile": active_profile()}
            _print(render_json(record))
        elif shown is not None:
            _print(shown)
        else:
            get_env().say(f"gradium: {setting} is not set in profile {active_profile()}")
        return 0 if found.value is not None else 1

    code = guard(body)
    if code:
        raise typer.Exit(code)


@config_app.command("list")
def list_settings(json_out: o.JsonOpt = False, profile: o.ProfileOpt = None) -> None:
    """Every setting of the active profile, its value (the key masked) and where it comes from.

    \b
    Piped columns: name, value, source (env, config or unset).
    """

    def body() -> None:
        from gradium_cli.config import ENV_VARS, KNOWN_SETTINGS, active_profile, config_path, profiles, resolve
        from gradium_cli.ui.tables import Column, print_table

        rows: list[dict[str, Any]] = []
        for setting in KNOWN_SETTINGS:
            found = resolve(setting)
            rows.append(
                {
                    "name": setting,
                    "value": _shown(setting, found.value),
                    "source": found.source if found.value is not None else "unset",
                    "env": ENV_VARS[setting],
                }
            )
        current = active_profile()
        columns = [Column("name", "setting", style="bold"), Column("value", "value"), Column("source", "from")]
        print_table(
            rows,
            columns,
            json_out=json_out,
            json_rows={"profile": current, "path": str(config_path()), "profiles": profiles(), "settings": rows},
            title=f"profile {current} · {config_path()}",
        )

    guard(body)


@config_app.command("path")
def show_path() -> None:
    """Print the config file's path (it may not exist yet)."""
    from gradium_cli.config import config_path

    guard(lambda: _print(str(config_path())))


@config_app.command("unset")
def unset_setting(name: NameArg, profile: o.ProfileOpt = None) -> None:
    """Remove a setting from the active profile."""

    def body() -> None:
        from gradium_cli.config import active_profile, check_setting, unset_value

        setting = check_setting(name)
        removed = unset_value(setting)
        where = f"profile {active_profile()}"
        get_env().say(
            f"gradium: removed {setting} from {where}" if removed else f"gradium: {setting} was not set in {where}"
        )

    guard(body)
