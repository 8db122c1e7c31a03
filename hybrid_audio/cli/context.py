"""One invocation's context: the global options, the client built from them, its log record.

Global options (`--url`, `--timeout`, `--json`) are accepted before the sub-command, between
group and command, and after the command, as `gh` and `kubectl` accept theirs:
`hybrid-audio generate name José --json`. The root declares them with their environment
variable and default; `CommandGroup` adds the same options, defaulting to "not given", to
every group and command it registers, through the function signature typer reads — so they
show in each command's `--help` and typer parses them as usual. A value given later on the
line overrides an earlier one. The client is built on first use, after every level parsed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from hybrid_audio.cli.calllog import Invocation
from hybrid_audio.cli.client import DEFAULT_URL, URL_VAR, Api
from hybrid_audio.cli.render import print_json

PANEL = "Global options (also accepted after the sub-command)"
_URL_HELP = "Base URL of the API."
_TIMEOUT_HELP = "Seconds to wait for the server on each request."
_JSON_HELP = "Print the raw JSON answer instead of tables."
DEFAULT_TIMEOUT = 30.0


def _check_url(url: str | None) -> str | None:
    if url is not None and (
        urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname
    ):
        raise typer.BadParameter(f"expected http(s)://host[:port], got {url!r}")
    return url


#: The global options where they are first accepted, before any sub-command.
RootUrl = Annotated[
    str, typer.Option(envvar=URL_VAR, callback=_check_url, help=_URL_HELP, rich_help_panel=PANEL)
]
RootTimeout = Annotated[float, typer.Option(min=0.1, help=_TIMEOUT_HELP, rich_help_panel=PANEL)]
RootJson = Annotated[bool, typer.Option("--json", help=_JSON_HELP, rich_help_panel=PANEL)]


def _later(name: str, kind: type, *declarations: str, **settings: Any) -> inspect.Parameter:
    """A global option as groups and commands take it: None when not given at that level."""
    option = typer.Option(*declarations, rich_help_panel=PANEL, show_default=False, **settings)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


#: The same options on every group and command: None when not given there, so they override
#: only what the user typed at that level.
_LATER = (
    _later("url", str, callback=_check_url, help=_URL_HELP),
    _later("timeout", float, min=0.1, help=_TIMEOUT_HELP),
    _later("as_json", bool, "--json", help=_JSON_HELP),
)
_GLOBAL_NAMES = tuple(p.name for p in _LATER)


@dataclass
class Session:
    """Everything one invocation shares between its levels: options, log record, client."""

    url: str = DEFAULT_URL
    timeout: float = DEFAULT_TIMEOUT
    as_json: bool = False
    call: Invocation = field(default_factory=Invocation)
    _api: Api | None = None

    def set_options(self, **given: Any) -> None:
        """Take the global options given at one level (None: not given there)."""
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)

    @property
    def api(self) -> Api:
        """The client, built on first use from the options of every level."""
        if self._api is None:
            self._api = Api(self.url, self.timeout, self.call)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def show(self, data: Any, render: Callable[[Any], None]) -> None:
        """Raw JSON with --json, otherwise the command's rich rendering."""
        if self.as_json:
            print_json(data)
        else:
            render(data)

    def show_answer(
        self, method: str, path: str, render: Callable[[Any], None], **kwargs: Any
    ) -> Any:
        """Send one request, show its JSON answer, and return it."""
        data = self.api.json(method, path, **kwargs)
        self.show(data, render)
        return data


def session(ctx: typer.Context) -> Session:
    """The invocation's session, created by the root if the app's runner did not pass one."""
    root = ctx.find_root()
    if not isinstance(root.obj, Session):
        root.obj = Session()
        root.call_on_close(root.obj.close)
    return root.obj


def accept_global_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (which takes `ctx: typer.Context`) with the global options added to its
    signature; their values go to the session, never to `func`."""
    signature = inspect.signature(func, eval_str=True)
    if "ctx" not in signature.parameters:
        raise TypeError(f"{func.__name__} needs a `ctx: typer.Context` parameter")

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, None) for name in _GLOBAL_NAMES}
        session(kwargs["ctx"]).set_options(**given)
        return func(**kwargs)

    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *_LATER]
    )
    return command


def _group_options(ctx: typer.Context) -> None:
    """Global options given between a group and its command."""


class CommandGroup(typer.Typer):
    """A group of sub-commands, each of which (and the group itself) takes the global options.

    The root passes its own `callback`, which declares the options with their defaults."""

    def __init__(self, *, callback: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        super().__init__(
            no_args_is_help=True,
            callback=callback or accept_global_options(_group_options),
            **kwargs,
        )

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)
        return lambda func: register(accept_global_options(func))
