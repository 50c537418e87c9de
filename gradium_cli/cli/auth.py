"""`gradium auth`: store an API key once it is checked, show where it comes from, remove it.

The key is read without echo on a terminal, or from stdin when piped, so it
never lands in shell history; it is checked with `GET usages/credits` before
anything is stored. Output shows it masked, always.
"""

from typing import Any

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import guard, run
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.ui.env import get_env

auth_app = plain_typer(
    name="auth",
    help="Log in with an API key (checked, then stored), see the key and credits in use, log out.",
    no_args_is_help=True,
)


def read_key() -> str:
    """An API key typed without echo on a terminal, else the first line of stdin."""
    from gradium_cli.errors import UsageError

    env = get_env()
    if env.stdin_isatty:
        key = str(typer.prompt("Gradium API key", hide_input=True, err=True))
    else:
        key = env.stdin.read().decode("utf-8", "replace")
        key = key.strip().splitlines()[0] if key.strip() else ""
    key = key.strip()
    if not key:
        raise UsageError(
            "no API key given", hint="type it at the prompt, or pipe it: `pass gradium | gradium auth login`"
        )
    from gradium_cli.config import check_api_key

    check_api_key(key, "typed")
    return key


async def fetch_credits(endpoint: Endpoint) -> dict[str, Any] | None:
    """The credits summary, or None when the server does not offer it (HTTP 404).

    Without credits the key is still checked, with a one-voice listing.
    """
    from gradium_cli.errors import RequestError
    from gradium_cli.transport.rest import RestClient

    async with RestClient(endpoint) as rest:
        try:
            credits = await rest.json("GET", "usages/credits")
        except RequestError as error:
            if "HTTP 404" not in error.message:
                raise
            await rest.json("GET", "voices/", params={"limit": 1})
            return None
    return credits if isinstance(credits, dict) else None


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _credits_line(credits: dict[str, Any] | None) -> str:
    if not credits or "remaining_credits" not in credits:
        return "not offered by this server"
    line = _number(credits["remaining_credits"])
    if "allocated_credits" in credits:
        line += f" of {_number(credits['allocated_credits'])}"
    if credits.get("plan_name"):
        line += f" (plan {credits['plan_name']})"
    return line


@auth_app.command("login")
def login(
    base_url: o.BaseUrlOpt = None,
    region: o.RegionOpt = None,
    timeout: o.TimeoutOpt = 30.0,
    profile: o.ProfileOpt = None,
) -> None:
    """Read an API key (hidden prompt, or stdin), check it with the server, store it in the active profile.

    A refused key exits 4 and nothing is stored. A --base-url or --region given
    here is stored with the key.

    \b
    gradium auth login
    pass show gradium | gradium auth login --profile work
    gradium auth login --base-url http://127.0.0.1:8765/api/
    """
    from gradium_cli.backend import BackendOptions, open_backend
    from gradium_cli.config import active_profile, mask_secret, set_value
    from gradium_cli.errors import AuthError

    key = guard(read_key)

    async def check() -> tuple[str, dict[str, Any] | None]:
        with open_backend(BackendOptions(base_url, key, region, timeout, False, profile)) as endpoint:
            try:
                return endpoint.base_url, await fetch_credits(endpoint)
            except AuthError:
                raise AuthError(
                    f"{endpoint.base_url} refused the key {mask_secret(key)}; nothing was stored",
                    hint="check the key, and --base-url or --region",
                ) from None

    url, credits = run(check())

    def store() -> None:
        path = set_value("api-key", key)
        if base_url is not None:
            set_value("base-url", base_url)
        if region is not None:
            set_value("region", region)
        get_env().say(
            f"gradium: key {mask_secret(key)} accepted by {url}; stored in profile {active_profile()} ({path})"
        )
        if credits is not None:
            get_env().say(f"gradium: credits left: {_credits_line(credits)}")

    guard(store)


@auth_app.command("status")
def status(
    json_out: o.JsonOpt = False,
    base_url: o.BaseUrlOpt = None,
    api_key: o.ApiKeyOpt = None,
    region: o.RegionOpt = None,
    timeout: o.TimeoutOpt = 30.0,
    profile: o.ProfileOpt = None,
) -> None:
    """Show the key in use (masked) and where it comes from, the server, and the credits left.

    Exits 0 when a key is set and accepted, 4 when none is set or it is refused,
    7 when the server cannot be reached.

    \b
    Piped lines: field<TAB>value.
    """
    from gradium_cli.backend import BackendOptions, open_backend
    from gradium_cli.config import REGION_URLS, active_profile, config_path, mask_secret, resolve
    from gradium_cli.errors import ExitCode, GradiumError
    from gradium_cli.ui.tables import Column, print_record

    key = guard(lambda: resolve("api-key", api_key))
    base = guard(lambda: resolve("base-url", base_url))
    zone = guard(lambda: resolve("region", region))
    record: dict[str, Any] = {
        "profile": active_profile(),
        "config_path": str(config_path()),
        "api_key": mask_secret(key.value) if key.value else None,
        "api_key_source": key.source if key.value else "unset",
        "base_url": base.value or REGION_URLS.get(zone.value or "default"),
        "base_url_source": base.source if base.value else ("region" if zone.value else "default"),
        "region": zone.value,
        "key_accepted": None,
        "credits": None,
        "error": None,
    }
    code = ExitCode.OK
    if not key.value:
        record["error"] = (
            f"no API key set, but commands go to {base.value} (base-url from {base.source}) without one, "
            "which a hosted server refuses: run `gradium auth login`, or unset base-url for the offline engine"
            if base.value
            else "no API key set: run `gradium auth login` (commands use the offline engine meanwhile)"
        )
        code = ExitCode.AUTH
    else:

        async def check() -> tuple[dict[str, Any] | None, GradiumError | None]:
            # Failures go into the record, not out as errors: status reports them.
            try:
                with open_backend(BackendOptions(base_url, api_key, region, timeout, False, profile)) as endpoint:
                    return await fetch_credits(endpoint), None
            except GradiumError as error:
                return None, error

        record["credits"], problem = run(check())
        record["key_accepted"] = problem is None
        if problem is not None:
            record["error"] = problem.message
            code = problem.exit_code
            if code != ExitCode.AUTH:
                record["key_accepted"] = None
    fields = [
        Column("profile", "profile"),
        Column("api_key", "API key"),
        Column("api_key_source", "key from"),
        Column("base_url", "server"),
        Column("region", "region"),
        Column("key_accepted", "key accepted"),
        Column("credits_left", "credits left"),
        Column("error", "problem"),
    ]
    shown = {**record, "credits_left": _credits_line(record["credits"]) if record["key_accepted"] else None}
    print_record(shown, fields, json_out=json_out, json_record=record)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


@auth_app.command("logout")
def logout(profile: o.ProfileOpt = None) -> None:
    """Remove the stored API key from the active profile."""
    import os

    from gradium_cli.config import ENV_VARS, active_profile, resolve, unset_value

    removed = guard(lambda: unset_value("api-key"))
    env = get_env()
    where = f"profile {active_profile()}"
    env.say(f"gradium: removed the API key from {where}" if removed else f"gradium: no API key stored in {where}")
    if os.environ.get(ENV_VARS["api-key"]):
        env.say(f"gradium: note: {ENV_VARS['api-key']} is still set in the environment")
    base = guard(lambda: resolve("base-url"))
    if base.value:
        # Without a key, commands still go to this server, not to the offline engine.
        where_from = f"stored in {where}" if base.source == "config" else f"set by {ENV_VARS['base-url']}"
        env.say(
            f"gradium: note: base-url {base.value} is still {where_from}: commands go there without a key "
            f"({'`gradium config unset base-url`' if base.source == 'config' else 'unset it'} for the offline engine)"
        )
