"""`hybrid-audio-server`: run the API with uvicorn, refusing unsafe binds and slow clients.

Without INTERNAL_API_KEY the server only binds a loopback address; anything else needs a
key or an explicit `--insecure`.

Slow clients cannot hold connections: an idle keep-alive connection is closed after
`--keep-alive` seconds (uvicorn), a request's headers must be complete within
`--header-timeout` seconds of their first byte (or of connecting) whatever the client
trickles in meanwhile, and may be at most `MAX_HEADER_BYTES` (`BoundedHeadersProtocol`:
uvicorn has no time bound, and its size bound applies only to its h11 parser, not to
httptools, which it picks when installed), and each part of a body must arrive within
`--body-timeout` seconds (`middleware.ReadTimeout`, 408).

`--workers N` serves the one base directory from N processes: uvicorn's supervisor passes
the one listening socket (with its options) to N spawned workers, and each builds its own
app and Workspace from the same Settings (`create_app` as a factory). What they share lives
on disk: jobs, dashboard sessions and login failure counts in the state database, stems
behind per-stem locks, rotation positions in SQLite. A worker that dies is replaced; its
running jobs read as `interrupted` from any other worker. Each log line then names the
worker that wrote it (`worker_log_config`).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import ipaddress
import json
import os
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess

from hybrid_audio.api.app import BODY_READ_TIMEOUT, create_app
from hybrid_audio.api.errors import envelope_body
from hybrid_audio.config import Settings, SettingsError
from hybrid_audio.kinds import load as load_kinds

#: Seconds a client may take to send a request's headers.
HEADER_TIMEOUT = 10.0
#: Largest request line and headers accepted (beyond: 400, connection closed).
MAX_HEADER_BYTES = 16 * 1024
#: Seconds a refused connection is drained before it is closed (see `_refuse_large_headers`).
REFUSAL_LINGER_S = 2.0


class BoundedHeadersProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with a deadline for each request's headers.

    uvicorn cancels its keep-alive timer on any byte received and sets no other timer
    until the headers are complete, so a client sending a header byte now and then
    (slowloris) would keep the connection forever. Here a deadline starts when the
    connection opens, or when the first byte of a next request arrives, and is not moved
    by further bytes; when the headers are complete (uvicorn then starts a request cycle)
    it is cancelled. A connection whose headers miss it is closed.

    A request line and headers larger than `max_header_bytes` get a 400 (in the error
    envelope, code `headers_too_large`; 400 as uvicorn's h11 bound answers, and a status
    clients and the OpenAPI document know) and the connection is closed: uvicorn bounds
    them only with its h11 parser, and with httptools (picked when installed) a header of
    megabytes was accepted. The bytes received before
    the headers are complete are counted (a header still growing), and so are the parsed
    request line and headers (`on_url`, `on_header`: httptools' callbacks, never called
    under h11, whose own bound then answers 400).
    """

    header_timeout: float = HEADER_TIMEOUT
    max_header_bytes: int = MAX_HEADER_BYTES

    def __init__(self, *args: Any, header_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if header_timeout is not None:
            self.header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # received while the headers are incomplete
        # Between a message's start (or the connection's) and the end of its headers: what
        # arrives after a response that did not read the body (an early 413) is body, not
        # headers (httptools' callbacks; under h11 it stays True, and h11 bounds headers).
        self._reading_headers = True
        self._parsed_bytes = 0  # request line and headers of the current request
        self._headers_too_large = False

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        self._header_bytes = 0
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _upgraded(self) -> bool:
        """The connection now belongs to a websocket protocol, with its own timeouts (pings).

        uvicorn upgrades without a request cycle, so without this check the deadline of the
        upgrade request's headers closed every dashboard websocket 10 s after it opened.
        """
        return self.transport.get_protocol() is not self

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self._upgraded() or self._in_request() or self.transport.is_closing():
            return
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)  # see SEND_LOWAT_BYTES
        self._arm_header_deadline()

    def _refuse_large_headers(self) -> None:
        """Answer 400 and end the connection: the headers grew past `max_header_bytes`.

        Closed at once with the client's bytes unread, the socket would send a reset, which
        can destroy the answer before the client reads it; so our side is shut after the
        answer, what still arrives is discarded, and the connection is closed
        `REFUSAL_LINGER_S` later at the latest.
        """
        self._headers_too_large = True
        text = f"request line and headers larger than {self.max_header_bytes} bytes"
        body = json.dumps(envelope_body("headers_too_large", text)).encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self._cancel_header_deadline()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        self._parsed_bytes = 0
        self._reading_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_headers = True
        super().on_message_complete()

    def _count_parsed(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._headers_too_large = True
            raise ValueError("headers too large")  # httptools stops parsing: a parser error

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)  # "name: value\r\n"
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when the error is our size bound."""
        if self._headers_too_large:
            self._refuse_large_headers()
        else:
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        if self._headers_too_large:
            return  # refused: the rest is drained, not parsed
        if not self._in_request():
            self._arm_header_deadline()  # (also over an unread body: no endless trickle)
            if self._reading_headers:
                self._header_bytes += len(data)
        super().data_received(data)
        if self._in_request() or self._upgraded():
            self._cancel_header_deadline()
        elif self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse_large_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def max_workers() -> int:
    """The most `--workers` accepted: twice the CPUs (beyond that they only queue)."""
    return 2 * (os.cpu_count() or 1)


def worker_count(text: str) -> int:
    """`--workers` as an int within 1..`max_workers()` (argparse type)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= max_workers():
        raise argparse.ArgumentTypeError(f"must be 1..{max_workers()} (2 × CPUs), not {count}")
    return count


def worker_log_config() -> dict[str, Any]:
    """uvicorn's logging, each line naming the process that wrote it (`INFO: [pid] …`).

    With several workers a request, a websocket or an error is otherwise not tied to the
    process that handled it (the dashboard's page and its websocket may be two workers).
    """
    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace(
            "%(levelprefix)s", "%(levelprefix)s [%(process)d]", 1
        )
    return config


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
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT,
        help=f"seconds a client may take to send its headers (default {HEADER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_READ_TIMEOUT,
        help="seconds to wait for each part of a request body before answering 408 "
        f"(default {BODY_READ_TIMEOUT:g})",
    )
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="server processes sharing the port and the base directory (default 1; at most "
        "2 × CPUs): each runs requests and jobs on its own core; jobs, sessions, login "
        "limits, stems and rotation are shared through the state database and files",
    )
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
    if args.workers == 1:
        app: Any = create_app(settings, body_timeout=args.body_timeout)
    else:  # each worker calls the factory; a bad kinds.json still stops the start here
        load_kinds(settings)
        app = functools.partial(create_app, settings, body_timeout=args.body_timeout)
    config = uvicorn.Config(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=worker_log_config() if args.workers > 1 else LOGGING_CONFIG,
        # A partial, not a subclass made here: workers are spawned, the config is pickled.
        http=functools.partial(BoundedHeadersProtocol, header_timeout=args.header_timeout),
        timeout_keep_alive=args.keep_alive,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=5,
        # The supervisor kills a worker that misses a ping for this long; a worker loading
        # its voice or busy with a bulk job on a loaded machine must not look hung (default 5).
        timeout_worker_healthcheck=30,
    )
    sockets = [listening_socket(config)]
    if args.workers == 1:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        Multiprocess(config, sockets=sockets).run()
    return 0


#: Unsent bytes the kernel keeps per connection (TCP_NOTSENT_LOWAT), and the bytes
#: uvicorn buffers before it makes the app wait (asyncio's default is 64 KiB). Without them
#: the send buffer grows to megabytes for a reader that stopped reading, and an NDJSON
#: stream would run ~14,000 rotation positions ahead of its reader. With 4 KiB each a
#: stalled reader costs ~214 positions (`rotation.STREAM_LOSS_BOUND`); 16 KiB gave ~262,
#: at the same full-read rate (~13,000 pair lines/s). What remains is mostly the kernel's
#: last unsent segment, which Linux fills past the low mark (up to an MSS or half the
#: reader's window). Bulk downloads are not slowed (bytes in flight are not counted).
SEND_LOWAT_BYTES = 4 * 1024
WRITE_BUFFER_BYTES = 4 * 1024


def listening_socket(config: uvicorn.Config) -> socket.socket:
    """uvicorn's socket for `config`, with `SEND_LOWAT_BYTES` (accepted connections inherit it)."""
    listener = config.bind_socket()
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS
    if lowat is not None:
        listener.setsockopt(socket.IPPROTO_TCP, lowat, SEND_LOWAT_BYTES)
    return listener


if __name__ == "__main__":
    sys.exit(main())
