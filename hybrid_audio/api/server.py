"""`hybrid-audio-server`: run the API with uvicorn, refusing unsafe binds.

Without INTERNAL_API_KEY the server only binds a loopback address; anything else needs a
key or an explicit `--insecure`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

import uvicorn

from hybrid_audio.api.app import create_app
from hybrid_audio.config import Settings, SettingsError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hybrid-audio-server",
        description="Serve the Hybrid Audio HTTP API (OpenAPI docs at /docs).",
        epilog="Example: hybrid-audio-server --host 127.0.0.1 --port 8000",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback bind without INTERNAL_API_KEY (not recommended)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not settings.internal_api_key and not args.insecure:
        print(
            f"error: refusing to bind {args.host} without INTERNAL_API_KEY; set a key, bind "
            "127.0.0.1, or pass --insecure",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
