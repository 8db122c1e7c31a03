"""`hybrid-audio`: the command-line client of the HTTP API, one sub-command per route.

It speaks HTTP only and imports nothing from the rest of the `hybrid_audio` package (just
the standard library, httpx, typer and rich), so it works against a remote server and stays in
step with the API through the wire contract rather than shared code; even the stem kinds it
accepts come from the server (`GET /kinds`).

Modules: `client` (transport, errors, key, timeout, kinds), `calllog` (the call log in the
user's state folder), `render` (tables and JSON), `context` (global options accepted before
or after the sub-command), one module per command group (`generate`, `assemble`,
`rotation`, `cache`, `datasets` for `external …`, `jobs`, `storage`), and `main` (the app).

Exit codes: 0 ok; 1 the server refused the request (or a job failed, a verification did
not pass, a download could not be saved), printed as one `error: …` line on stderr;
2 usage (typer's own, an unknown kind or stream); 3 the server could not be reached.
Expected failures never print a traceback. The API key is read from `INTERNAL_API_KEY`
only — never an option (shell history), never printed, never logged.
"""

from hybrid_audio.cli.main import app

__all__ = ["app"]
