"""A local web page to try trained models: type a prompt, move the sliders, watch the text arrive.

    python -m distill.serve models/tiny/student                  # one model folder
    python -m distill.serve recipes/tiny.yaml                    # every finished model of a recipe
    python -m distill.serve models/a models/b --port 8080        # several, side by side

The server is the standard library's ``ThreadingHTTPServer`` bound to 127.0.0.1. Every request is
bounded: ``--max-tokens`` caps ``max_new_tokens``, each model generates for one request at a time
(a lock per model; a request that waits longer than ``--queue-timeout`` seconds gets 503), and a
generation stops after ``--timeout`` seconds through a ``StoppingCriteria``. A malformed request gets
a JSON error and never stops the server.

Endpoints::

    GET  /                the page (distill/static/index.html)
    GET  /api/models      [{"id", "name", "role", "arch", "num_parameters", "val_ppl", "seq_len", "path"}]
    GET  /api/config      {"max_tokens", "timeout", "queue_timeout", "defaults": {...}, "limits": {...}}
    POST /api/generate    {"model", "prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                           "repetition_penalty", "seed"} -> {"model", "text", "stopped", "seconds"}
    POST /api/stream      same body -> text/event-stream: ``data: {"text": piece}`` events, then
                          ``event: done`` (or ``event: error`` if generation fails midway)

``stopped`` is "end" (max_new_tokens or ``</s>``), "timeout" or "cancelled". Errors are
``{"error": "..."}`` with 400 (bad field, malformed JSON), 403 (a Host other than this machine),
404/405 (unknown path or method), 411/413 (missing or too large body), 415 (not JSON), 503 (model
busy) or 500 (a bug; the server keeps running).
"""
from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from distill.errors import DistillError, cli_entry

MAX_BODY_BYTES = 64 * 1024  # a prompt plus a few numbers; anything bigger is refused unread
MAX_PROMPT_CHARS = 8000
SOCKET_TIMEOUT_S = 30  # a client that stops sending or reading is dropped after this

# Same defaults and meaning as the recipe's `generate` section.
DEFAULTS = {
    "max_new_tokens": 60,
    "temperature": 0.8,
    "top_k": 50,
    "top_p": 0.95,
    "repetition_penalty": 1.1,
    "seed": 0,
}


@dataclass(frozen=True)
class _Field:
    kind: type  # int or float
    low: float
    high: float | None  # None: the server's --max-tokens
    low_open: bool = False  # True: low itself is not allowed
    hint: str = ""


FIELDS = {
    "max_new_tokens": _Field(int, 1, None, hint="tokens to generate"),
    "temperature": _Field(float, 0.0, 5.0, hint="0 = greedy decoding"),
    "top_k": _Field(int, 0, 100_000, hint="0 = no limit"),
    "top_p": _Field(float, 0.0, 1.0, low_open=True, hint="1.0 = no limit"),
    "repetition_penalty": _Field(float, 0.0, 10.0, low_open=True, hint="1.0 = none"),
    "seed": _Field(int, 0, 2**32 - 1),
}
TEXT_FIELDS = ("model", "prompt")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason for the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class GenerationRequest:
    model: str
    prompt: str
    params: dict[str, Any]  # max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed


@dataclass
class ModelSlot:
    """One loaded model, what the page shows about it, and its one-generation-at-a-time lock."""

    id: str
    path: Path
    model: Any
    tokenizer: Any
    meta: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.meta, "path": str(self.path)}


# ----------------------------------------------------------------------------- model folders


def find_model_dirs(targets: Sequence[str | Path]) -> list[Path]:
    """Model folders to serve: each target is a model folder or a recipe YAML.

    A recipe stands for its finished model folders (those holding a ``distill.json``):
    ``{output_dir}/teachers/*``, ``student`` and ``baseline``, in that order.
    """
    dirs: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            found = _recipe_model_dirs(path)
            if not found:
                raise DistillError(
                    f"{path}: no finished model folder under its output_dir (none with a distill.json); "
                    f"train one first, e.g. accelerate launch -m distill.student {path}"
                )
            dirs += found
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise DistillError(f"{path}: not a model folder (no config.json); give a folder written by save_pretrained or a recipe YAML")
            dirs.append(path)
        elif path.exists():
            raise DistillError(f"{path}: neither a model folder nor a recipe .yaml file")
        else:
            raise DistillError(f"{path}: not found; give a model folder (e.g. models/tiny/student) or a recipe YAML")
    unique: list[Path] = []
    for path in dirs:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def _recipe_layout(recipe_path: Path) -> tuple[Path, list[str]]:
    """The recipe's output_dir and its teacher names in recipe order."""
    try:
        from distill.recipe import load_recipe
    except ImportError:  # only output_dir and the teacher names are needed
        load_recipe = None
    if load_recipe is not None:
        recipe = load_recipe(recipe_path)
        return Path(recipe.output_dir), [teacher.name for teacher in recipe.teachers]
    import yaml

    try:
        data = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DistillError(f"{recipe_path}: cannot read the recipe ({err})") from None
    if not isinstance(data, dict):
        raise DistillError(f"{recipe_path}: a recipe must be a YAML mapping (see recipes/tiny.yaml)")
    teachers = data.get("teachers") if isinstance(data.get("teachers"), list) else []
    names = [str(t["name"]) for t in teachers if isinstance(t, dict) and "name" in t]
    return Path(data.get("output_dir") or Path("models") / str(data.get("name", ""))), names


def _recipe_model_dirs(recipe_path: Path) -> list[Path]:
    root, names = _recipe_layout(recipe_path)
    teachers = [root / "teachers" / name for name in names]
    teachers += [path for path in sorted((root / "teachers").glob("*")) if path not in teachers]
    candidates = teachers + [root / "student", root / "baseline"]
    return [path for path in candidates if (path / "distill.json").is_file()]


def recipe_defaults(targets: Sequence[str | Path]) -> dict[str, Any]:
    """The first recipe's ``generate`` settings (or {}), so the page starts where the recipe does."""
    for target in targets:
        path = Path(target)
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            try:
                from distill.recipe import load_recipe

                generate = load_recipe(path).generate
            except (ImportError, DistillError, AttributeError):
                return {}
            return {key: getattr(generate, key) for key in DEFAULTS if hasattr(generate, key)}
    return {}


def _read_distill_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "distill.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise DistillError(f"{path / 'distill.json'}: unreadable ({err}); retrain or fix the file") from None
    return data if isinstance(data, dict) else {}


def model_meta(path: Path, model: Any, info: dict[str, Any] | None) -> dict[str, Any]:
    """What the page shows: name, role, arch, size and validation perplexity (from distill.json)."""
    data = dict(info or {})
    stamp = _read_distill_json(path)
    for key, value in stamp.items():
        data.setdefault(key, value)
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    num_parameters = data.get("num_parameters")
    if not isinstance(num_parameters, int):
        num_parameters = sum(p.numel() for p in model.parameters())
    val_ppl = metrics.get("val_ppl", data.get("val_ppl"))
    return {
        "name": str(data.get("name") or path.name),
        "role": str(data.get("role") or "model"),
        "arch": str(data.get("arch") or getattr(getattr(model, "config", None), "model_type", "") or ""),
        "num_parameters": num_parameters,
        "val_ppl": float(val_ppl) if isinstance(val_ppl, (int, float)) and math.isfinite(val_ppl) else None,
        "seq_len": data.get("seq_len"),
    }


def load_slots(model_dirs: Sequence[Path], device: str | None = None) -> dict[str, ModelSlot]:
    """Load every model folder once; ids are the distill.json names, made unique (``llama``, ``llama-2``)."""
    from distill.generate import load_model

    slots: dict[str, ModelSlot] = {}
    for path in model_dirs:
        loaded = load_model(path, device=device)
        model, tokenizer = loaded[0], loaded[1]
        info = loaded[2] if len(loaded) > 2 and isinstance(loaded[2], dict) else {}
        meta = model_meta(Path(path), model, info)
        base = meta["name"]
        # A teacher and the student may share a name; the role tells them apart.
        key = base if base not in slots else f"{meta['role']}-{base}"
        n = 2
        while key in slots:
            key, n = f"{base}-{n}", n + 1
        slots[key] = ModelSlot(key, Path(path), model, tokenizer, meta)
    return slots


# ----------------------------------------------------------------------------- requests


def parse_generation_request(body: Any, models: Sequence[str], max_tokens: int, defaults: dict[str, Any]) -> GenerationRequest:
    """Check a JSON body; raise RequestError(400, ...) naming the field and the allowed values."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object such as {\"prompt\": \"London was\"}")
    known = set(FIELDS) | set(TEXT_FIELDS)
    for key in body:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(sorted(known))}"
            raise RequestError(400, f"unknown field {key!r}{hint}")
    model = body.get("model")
    if model is None:
        if len(models) != 1:
            raise RequestError(400, f"model: missing; pick one of {', '.join(models)}")
        model = models[0]
    if not isinstance(model, str) or model not in models:
        raise RequestError(400, f"model: unknown model {model!r}; pick one of {', '.join(models)}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError(400, "prompt: missing or not a string; send some text to continue")
    if not prompt.strip():
        raise RequestError(400, "prompt: empty; type some text to continue, e.g. \"London was\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(400, f"prompt: {len(prompt)} characters is too long; the limit is {MAX_PROMPT_CHARS}")
    params = {}
    for name, spec in FIELDS.items():
        value = body.get(name)
        if value is None:
            value = defaults.get(name, DEFAULTS[name])
            if name == "max_new_tokens":
                value = min(value, max_tokens)
        params[name] = _check_number(name, value, spec, max_tokens)
    return GenerationRequest(model=model, prompt=prompt, params=params)


def _check_number(name: str, value: Any, spec: _Field, max_tokens: int) -> int | float:
    shown = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RequestError(400, f"{name}: {shown} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{name}: {shown} is not a number")
    if not math.isfinite(value):
        raise RequestError(400, f"{name}: {shown} is not a finite number")
    if spec.kind is int:
        if value != int(value):
            raise RequestError(400, f"{name}: {shown} is not a whole number")
        value = int(value)
    else:
        value = float(value)
    high = max_tokens if spec.high is None else spec.high
    too_low = value <= spec.low if spec.low_open else value < spec.low
    if too_low or value > high:
        low = f"({spec.low:g}" if spec.low_open else f"[{spec.low:g}"
        what = f"{name}: {shown} is out of range {low}, {high:g}]"
        if name == "max_new_tokens" and value > high:
            what = f"max_new_tokens: {shown} is more than this server's limit of {max_tokens} (--max-tokens)"
        raise RequestError(400, what + (f"; {spec.hint}" if spec.hint and "limit" not in what else ""))
    return value


# ----------------------------------------------------------------------------- generation


def _stopping_criteria(deadline: float, cancel: threading.Event, state: dict[str, Any]):
    """Stops generation at the wall-clock deadline or when the client has gone (checked per token)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _DeadlineOrCancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if time.monotonic() >= deadline:
                state["stopped"] = "timeout"
            elif cancel.is_set():
                state["stopped"] = "cancelled"
            stop = state["stopped"] in ("timeout", "cancelled")
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_DeadlineOrCancel()])


def generate_pieces(slot: ModelSlot, request: GenerationRequest, deadline: float, cancel: threading.Event, state: dict[str, Any]) -> Iterator[str]:
    """Text pieces of one generation; ``state["stopped"]`` ends as "end" (max_new_tokens or </s>), "timeout" or "cancelled".

    The caller holds ``slot.lock``. Stopping early goes through a StoppingCriteria, so the model is
    free again within one token of a timeout or a disconnect; closing this iterator stops it too.
    """
    from distill.generate import stream_generate

    state["stopped"] = "end"
    criteria = _stopping_criteria(deadline, cancel, state)
    yield from stream_generate(slot.model, slot.tokenizer, request.prompt, stopping_criteria=criteria, **request.params)


# ----------------------------------------------------------------------------- HTTP


class DistillServer(ThreadingHTTPServer):
    """The HTTP server plus the loaded models and the request limits."""

    daemon_threads = True
    allow_reuse_address = True

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

    # --- responses

    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any) -> None:
        self._send_bytes(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8")

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

    # --- routing

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
            self._send_json(err.status, {"error": err.message})
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
        if host is None or not _is_loopback(self.server.server_address[0]):
            return
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in _LOOPBACK_NAMES and not _is_loopback(name.strip("[]")):
            raise RequestError(403, f"Host {host!r} refused; open the page as {self.server.url}")

    # --- GET

    def _page(self):
        self._send_bytes(200, self.server.page, "text/html; charset=utf-8")

    def _models(self):
        self._send_json(200, [slot.describe() for slot in self.server.slots.values()])

    def _config(self):
        self._send_json(200, self.server.config())

    def _no_icon(self):
        self.send_response(204)
        self.end_headers()

    # --- POST

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
            )

    def _generate(self):
        request, slot = self._parse()
        self._acquire(slot)
        state: dict[str, Any] = {}
        start = time.monotonic()
        try:
            deadline = start + self.server.generation_timeout
            text = "".join(generate_pieces(slot, request, deadline, threading.Event(), state))
        except DistillError as err:
            raise RequestError(400, str(err)) from None
        finally:
            slot.lock.release()
        self._send_json(200, {"model": slot.id, "text": text, "stopped": state.get("stopped"), "seconds": round(time.monotonic() - start, 3)})

    def _stream(self):
        request, slot = self._parse()
        self._acquire(slot)
        cancel = threading.Event()
        state: dict[str, Any] = {}
        start = time.monotonic()
        pieces = None
        try:
            deadline = start + self.server.generation_timeout
            pieces = generate_pieces(slot, request, deadline, cancel, state)
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
            slot.lock.release()

    def _event(self, data: dict[str, Any], event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode("utf-8"))
        self.wfile.flush()


_ALL_ROUTES = {"GET": ("/", "/index.html", "/api/models", "/api/config"), "POST": ("/api/generate", "/api/stream")}


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    targets: Sequence[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_tokens: int = 256,
    timeout: float = 60.0,
    queue_timeout: float = 10.0,
    device: str | None = None,
    quiet: bool = False,
) -> DistillServer:
    """Load the models of ``targets`` (model folders or recipe YAMLs) and bind; call ``serve_forever()``."""
    if not 1 <= max_tokens <= 100_000:
        raise DistillError(f"--max-tokens {max_tokens}: must be between 1 and 100000")
    if not timeout > 0:
        raise DistillError(f"--timeout {timeout}: must be positive (seconds per generation)")
    if not queue_timeout >= 0:
        raise DistillError(f"--queue-timeout {queue_timeout}: must be 0 or more (seconds)")
    if not 0 <= port <= 65535:
        raise DistillError(f"--port {port}: must be between 0 (any free port) and 65535")
    slots = load_slots(find_model_dirs(targets), device=device)
    try:
        return DistillServer(
            (host, port), slots, max_tokens=max_tokens, timeout=timeout, queue_timeout=queue_timeout,
            defaults=recipe_defaults(targets), quiet=quiet,
        )
    except OSError as err:
        raise DistillError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another with --port (0 = any free port)") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.serve",
        description="A local web page to try trained models: prompt, sliders, streamed text, several models side by side.",
    )
    parser.add_argument("targets", nargs="+", metavar="MODEL_DIR|RECIPE.yaml", help="model folders, or recipes (every finished model folder of each)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--max-tokens", type=int, default=256, help="most new tokens one request may ask for (default 256)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one generation may run before it is stopped (default 60)")
    parser.add_argument("--queue-timeout", type=float, default=10.0, help="seconds a request waits for a busy model before 503 (default 10)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    server = make_server(
        args.targets, host=args.host, port=args.port, max_tokens=args.max_tokens, timeout=args.timeout,
        queue_timeout=args.queue_timeout, device=args.device, quiet=args.quiet,
    )
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the models", file=sys.stderr)
    names = ", ".join(f"{slot.id} ({slot.meta['role']})" for slot in server.slots.values())
    print(f"serving {names} at {server.url}  (Ctrl+C to stop)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly on SIGTERM as on Ctrl+C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
