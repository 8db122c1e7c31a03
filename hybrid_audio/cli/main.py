"""The `hybrid-audio` app: the root command, its groups, and the one place errors are printed.

Every invocation runs through `App.__call__`, which gives it a fresh `Session`, prints a
`CliError` as one `error: …` line with its exit code (never a traceback), and appends the
invocation's line to the call log whatever the outcome — usage errors included.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.main import get_command

from hybrid_audio.cli import (
    assemble,
    cache,
    calllog,
    campaign,
    datasets,
    generate,
    jobs,
    pronounce,
    rotation,
    storage,
)
from hybrid_audio.cli.client import DEFAULT_URL, CliError, safe_url
from hybrid_audio.cli.context import (
    DEFAULT_TIMEOUT,
    CommandGroup,
    RootJson,
    RootTimeout,
    RootUrl,
    Session,
    session,
)
from hybrid_audio.cli.render import err, kv_table, out, safe

#: Global options that take a value, so their value is not read as a sub-command word.
_VALUE_OPTIONS = frozenset({"--url", "--timeout"})


def _command_name(app: typer.Typer, argv: list[str]) -> str:
    """'cache list' from the argument list: the sub-command words, no values or options."""
    command: Any = get_command(app)
    words: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in _VALUE_OPTIONS:
            next(tokens, None)
            continue
        if token.startswith("-"):
            continue
        if token not in getattr(command, "commands", {}):
            break
        words.append(token)
        command = command.commands[token]
    return " ".join(words)


class App(CommandGroup):
    """Typer with one place that prints CliErrors as one line and logs every invocation."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cli = Session()
        argv = kwargs.get("args")
        command = _command_name(self, list(argv if argv is not None else sys.argv[1:]))
        code = 0
        try:
            return super().__call__(*args, obj=cli, **kwargs)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            raise
        except CliError as error:
            code = error.exit_code
            err.print(safe(f"error: {error.message}"))
            raise SystemExit(code) from None
        finally:
            cli.close()
            calllog.write(cli.call, command, code)


def _root(
    ctx: typer.Context,
    url: RootUrl = DEFAULT_URL,
    timeout: RootTimeout = DEFAULT_TIMEOUT,
    as_json: RootJson = False,
) -> None:
    """Command-line client of the Hybrid Audio HTTP API."""
    session(ctx).set_options(url=url, timeout=timeout, as_json=as_json)


app = App(
    name="hybrid-audio",
    help=(
        "Command-line client of the Hybrid Audio HTTP API: one sub-command per route.\n\n"
        "Example: hybrid-audio generate name José\n\n"
        "Global options go before or after the sub-command: hybrid-audio cache list --json. "
        "The key for a protected server is read from INTERNAL_API_KEY."
    ),
    callback=_root,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(generate.app, name="generate")
app.add_typer(assemble.app, name="assemble")
app.add_typer(rotation.app, name="rotation")
app.add_typer(cache.app, name="cache")
app.add_typer(datasets.app, name="external")
app.add_typer(jobs.app, name="jobs")
app.add_typer(storage.app, name="storage")
app.add_typer(campaign.app, name="campaign")
app.add_typer(pronounce.app, name="pronounce")


@app.command()
def health(ctx: typer.Context) -> None:
    """Check the server is up and show its engine, contract and whether it needs a key.

    Example: hybrid-audio health
    """
    cli = session(ctx)
    cli.show_answer(
        "GET", "/health", lambda d: out.print(kv_table(f"API {safe_url(cli.api.url)}", d))
    )
