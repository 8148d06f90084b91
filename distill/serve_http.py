"""The HTTP side of ``python -m distill.serve``: the server, its routes and its limits.

The standard library's ``ThreadingHTTPServer``; each request is answered by :class:`_Handler`,
which checks the Host, routes, reads a bounded JSON body and streams text as server-sent events.
The endpoints and error statuses are listed in :mod:`distill.serve`.
"""
from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from distill.errors import DistillError
from distill.serve_models import ModelSlot, generate_pieces
from distill.serve_requests import DEFAULTS, FIELDS, GenerationRequest, RequestError, parse_generation_request

MAX_BODY_BYTES = 64 * 1024  # a prompt plus a few numbers; anything bigger is refused unread
SOCKET_TIMEOUT_S = 30  # a client that stops sending or reading is dropped after this
LISTEN_BACKLOG = 128  # connections waiting to be accepted; past it the kernel drops or resets new ones
RETRY_AFTER_S = 1  # what a 503 (model busy) tells the client to wait before asking again


class DistillServer(ThreadingHTTPServer):
    """The HTTP server plus the loaded models and the request limits."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG  # socketserver's default of 5 drops or resets clients of a burst

    def __init__(
        self,
        address: tuple[str, int],
        slots: dict[str, ModelSlot],
        *,
        max_tokens: int = 256,
        timeout: float = 60.0,
        queue_timeout: float = 10.0,
        defaults: dict[str, Any] | None = None,
        quiet: bool = False,
    ):
        self.slots = slots
        self.max_tokens = max_tokens
        self.generation_timeout = timeout
        self.queue_timeout = queue_timeout
        merged = {**DEFAULTS, **(defaults or {})}
        merged["max_new_tokens"] = min(int(merged["max_new_tokens"]), max_tokens)
        self.defaults = merged
        self.quiet = quiet
        self.page = resources.files("distill").joinpath("static", "index.html").read_bytes()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def config(self) -> dict[str, Any]:
        limits = {}
        for name, spec in FIELDS.items():
            limits[name] = {"min": spec.low, "max": self.max_tokens if spec.high is None else spec.high, "min_exclusive": spec.low_open}
        return {
            "max_tokens": self.max_tokens,
            "timeout": self.generation_timeout,
            "queue_timeout": self.queue_timeout,
            "defaults": self.defaults,
            "limits": limits,
        }


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class _Handler(BaseHTTPRequestHandler):
    server: DistillServer
    server_version = "distill-serve"
    timeout = SOCKET_TIMEOUT_S

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8", headers)

    def send_error(self, code, message=None, explain=None):
        # http.server's own errors (garbage request line, unsupported method) as JSON too, with a
        # status line even when the request line was too broken to name an HTTP version.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        try:
            self._send_json(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:
            self.close_connection = True

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self):
        self._dispatch({"/": self._page, "/index.html": self._page, "/api/models": self._models, "/api/config": self._config, "/favicon.ico": self._no_icon})

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        self._dispatch({"/api/generate": self._generate, "/api/stream": self._stream})

    def _dispatch(self, routes) -> None:
        try:
            self._check_host()
            path = urlsplit(self.path).path
            route = routes.get(path)
            if route is None:
                other = "POST" if self.command in ("GET", "HEAD") else "GET"
                hint = f"; use {other}" if path in _ALL_ROUTES.get(other, ()) else ""
                raise RequestError(405 if hint else 404, f"no {self.command} {path}{hint}")
            route()
        except RequestError as err:
            self._send_json(err.status, {"error": err.message}, None if err.retry_after is None else {"Retry-After": str(err.retry_after)})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - a bug answers 500; the server keeps serving
            self.log_error("internal error on %s %s: %r", self.command, self.path, err)
            try:
                self._send_json(500, {"error": f"internal error: {type(err).__name__}: {err}"})
            except OSError:
                self.close_connection = True

    def _check_host(self) -> None:
        # Bound to loopback, refuse other Host names: a web page elsewhere cannot rebind its DNS to us.
        host = self.headers.get("Host")
        if host is None or not is_loopback(self.server.server_address[0]):
            return
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in _LOOPBACK_NAMES and not is_loopback(name.strip("[]")):
            raise RequestError(403, f"Host {host!r} refused; open the page as {self.server.url}")

    def _page(self):
        self._send_bytes(200, self.server.page, "text/html; charset=utf-8")

    def _models(self):
        self._send_json(200, [slot.describe() for slot in self.server.slots.values()])

    def _config(self):
        self._send_json(200, self.server.config())

    def _no_icon(self):
        self.send_response(204)
        self.end_headers()

    def _read_json(self) -> Any:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "chunked bodies are not supported; send a Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(411, "missing Content-Length; send a JSON body with its length")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(400, f"Content-Length {length_text!r} is not a number") from None
        if length < 0:
            raise RequestError(400, f"Content-Length {length} is negative")
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {length} bytes is too large; the limit is {MAX_BODY_BYTES}")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(415, f"Content-Type {content_type or 'missing'!r}; send application/json")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise RequestError(400, f"body ended after {len(raw)} of {length} bytes")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"malformed JSON body: {err}") from None
        except RecursionError:
            raise RequestError(400, "JSON body nested too deeply; send a flat object such as {\"prompt\": \"London was\"}") from None

    def _parse(self) -> tuple[GenerationRequest, ModelSlot]:
        server = self.server
        request = parse_generation_request(self._read_json(), list(server.slots), server.max_tokens, server.defaults)
        return request, server.slots[request.model]

    def _acquire(self, slot: ModelSlot) -> None:
        if not slot.lock.acquire(timeout=self.server.queue_timeout):
            raise RequestError(
                503,
                f"model {slot.id!r} is busy with another request (one at a time); "
                f"waited {self.server.queue_timeout:g} s, try again",
                retry_after=RETRY_AFTER_S,
            )

    def _generate(self):
        request, slot = self._parse()
        self._acquire(slot)
        state: dict[str, Any] = {}
        start = time.monotonic()
        client = _ClientWatch(self.connection)
        try:
            deadline = start + self.server.generation_timeout
            text = "".join(generate_pieces(slot, request, deadline, threading.Event(), state, client_gone=client.gone))
        except DistillError as err:
            raise RequestError(400, str(err)) from None
        finally:
            client.close()
            slot.lock.release()
        if state.get("stopped") == "cancelled":  # the client has gone: nobody to answer
            self.close_connection = True
            return
        self._send_json(200, {"model": slot.id, "text": text, "stopped": state.get("stopped"), "seconds": round(time.monotonic() - start, 3)})

    def _stream(self):
        request, slot = self._parse()
        self._acquire(slot)
        cancel = threading.Event()
        state: dict[str, Any] = {}
        start = time.monotonic()
        pieces = None
        client = _ClientWatch(self.connection)
        try:
            deadline = start + self.server.generation_timeout
            pieces = generate_pieces(slot, request, deadline, cancel, state, client_gone=client.gone)
            try:
                first = next(pieces, None)  # validation errors still get a plain 400
            except DistillError as err:
                raise RequestError(400, str(err)) from None
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            count = 0
            try:
                if first is not None:
                    self._event({"text": first})
                    count += 1
                    for piece in pieces:
                        self._event({"text": piece})
                        count += 1
            except (ConnectionError, TimeoutError):
                cancel.set()  # the client has gone: stop the model within one token
                for _ in pieces:
                    pass
                return
            except Exception as err:  # noqa: BLE001 - headers are sent; report in the stream
                self.log_error("generation failed for %s: %r", slot.id, err)
                self._event({"error": f"{type(err).__name__}: {err}"}, event="error")
                return
            seconds = round(time.monotonic() - start, 3)
            self._event({"stopped": state.get("stopped"), "seconds": seconds, "pieces": count}, event="done")
        finally:
            cancel.set()
            if pieces is not None:
                pieces.close()
            client.close()
            slot.lock.release()

    def _event(self, data: dict[str, Any], event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode("utf-8"))
        self.wfile.flush()


class _ClientWatch:
    """Whether the client of a connection has gone (closed or reset it), answered at once without
    reading its bytes. The generation asks once per token, so a client that leaves frees the model
    within a token even when nothing is being written to it (``/api/generate``)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._selector: selectors.BaseSelector | None = None  # made on the first question: making it can fail
        self._gone = False

    def gone(self) -> bool:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._sock, selectors.EVENT_READ)
        if not self._gone and self._selector.select(timeout=0):
            try:
                self._gone = not self._sock.recv(1, socket.MSG_PEEK)  # readable and empty: the client closed
            except OSError:  # reset
                self._gone = True
        return self._gone

    def close(self) -> None:
        """Called once the generation that asks :meth:`gone` has ended."""
        if self._selector is not None:
            self._selector.close()


_ALL_ROUTES = {"GET": ("/", "/index.html", "/api/models", "/api/config"), "POST": ("/api/generate", "/api/stream")}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
