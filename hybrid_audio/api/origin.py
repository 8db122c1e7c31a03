"""Where a request comes from: the Host it names and the page (origin) that sent it.

Two browser attacks are stopped with these facts:

- Cross-site requests. `SameSite=Strict` does not stop a page on another *port* of the same
  host (127.0.0.1:9000 is the same site as 127.0.0.1:8000), so a state-changing request is
  refused when the browser says it comes from another origin (`Sec-Fetch-Site` other than
  `same-origin`/`none`, or an `Origin` that is not this server's), and a cookie-authorised
  one also needs positive evidence that it comes from the server's own pages. Clients that
  are not browsers (the CLI, scripts) send neither header and use the key header instead.
- DNS rebinding. Without INTERNAL_API_KEY the server answers only requests whose `Host` is a
  loopback name or the address the connection arrived on; a hostile name re-pointed at
  127.0.0.1 is refused before any route runs.

The server's own origin is the request's scheme and `Host` (a proxy in front must pass the
Host through unchanged).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import Scope

#: Methods that never change state (RFC 9110 "safe").
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: `Sec-Fetch-Site` values of a request made by the server's own page or typed by the user.
_OWN_SITE = frozenset({"same-origin", "none"})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case bytes), decoded as latin-1."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def host_name(scope: Scope) -> str | None:
    """The host named by the `Host` header, lower-case, without port or brackets."""
    host = header(scope, b"host")
    if host is None:
        return None
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return ""


def own_origin(scope: Scope) -> str:
    """This server's origin as the browser sees it: scheme and Host."""
    secure = scope.get("scheme") in ("https", "wss")
    return f"{'https' if secure else 'http'}://{(header(scope, b'host') or '').lower()}"


def cross_origin(scope: Scope) -> bool:
    """The browser says this request was made by a page of another origin."""
    site = header(scope, b"sec-fetch-site")
    if site is not None and site.lower() not in _OWN_SITE:
        return True
    origin = header(scope, b"origin")
    return origin is not None and origin.lower() != own_origin(scope)


def from_own_page(scope: Scope) -> bool:
    """Positive evidence that a browser request comes from this server's own pages."""
    if cross_origin(scope):
        return False
    return header(scope, b"origin") is not None or header(scope, b"sec-fetch-site") is not None


def host_allowed(scope: Scope) -> bool:
    """The Host is a loopback name or the address this connection arrived on (not a name
    an attacker's DNS could point here). A request without Host cannot be rebound."""
    name = host_name(scope)
    if name is None:
        return True
    local = (scope.get("server") or ("",))[0]
    return name in LOOPBACK_NAMES or name == str(local).lower()
