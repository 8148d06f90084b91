"""A local web page to try trained models: type a prompt, move the sliders, watch the text arrive.

    python -m distill.serve models/tiny/student                  # one model folder
    python -m distill.serve recipes/tiny.yaml                    # every finished model of a recipe
    python -m distill.serve recipes/tiny.yaml output_dir=models/try  # a recipe with key=value overrides
    python -m distill.serve models/a models/b --port 8080        # several, side by side

The server is the standard library's ``ThreadingHTTPServer`` bound to 127.0.0.1. Every request is
bounded: ``--max-tokens`` caps ``max_new_tokens``, each model generates for one request at a time
(a lock per model; a request that waits longer than ``--queue-timeout`` seconds gets 503 with
``Retry-After``), and a generation stops after ``--timeout`` seconds through a ``StoppingCriteria``,
or within a token of its client closing the connection, on either endpoint. A burst of clients waits
in a listen backlog of 128. A malformed request gets a JSON error and never stops the server.

Endpoints::

    GET  /                the page (distill/static/index.html)
    GET  /api/models      [{"id", "name", "role", "arch", "num_parameters", "val_ppl", "seq_len", "path"}]
    GET  /api/config      {"max_tokens", "timeout", "queue_timeout", "defaults": {...}, "limits": {...}}
    POST /api/generate    {"model", "prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                           "repetition_penalty", "seed"} -> {"model", "text", "stopped", "seconds"}
    POST /api/stream      same body -> text/event-stream: ``data: {"text": piece}`` events, then
                          ``event: done`` (or ``event: error`` if generation fails midway)

``stopped`` is "end" (max_new_tokens or ``</s>``), "timeout" or "cancelled". Errors are
``{"error": "..."}`` with 400 (bad field, malformed or too deeply nested JSON, a lone surrogate),
403 (a Host other than this machine), 404/405 (unknown path or method), 411/413 (missing or too
large body), 415 (not JSON), 503 (model busy; ``Retry-After: 1``) or 500 (a bug; the server keeps
running).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Sequence

from distill.cli import ArgumentParser, parse
from distill.errors import DistillError, cli_entry
from distill.serve_http import DistillServer, is_loopback
from distill.serve_models import load_slots, read_targets, recipe_defaults, served_dirs


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
    """Load the models of ``targets`` (model folders, or recipe YAMLs each followed by its
    ``key=value`` overrides) and bind; call ``serve_forever()``."""
    if not 1 <= max_tokens <= 100_000:
        raise DistillError(f"--max-tokens {max_tokens}: must be between 1 and 100000")
    if not timeout > 0:
        raise DistillError(f"--timeout {timeout}: must be positive (seconds per generation)")
    if not queue_timeout >= 0:
        raise DistillError(f"--queue-timeout {queue_timeout}: must be 0 or more (seconds)")
    if not 0 <= port <= 65535:
        raise DistillError(f"--port {port}: must be between 0 (any free port) and 65535")
    items = read_targets(targets)
    slots = load_slots(served_dirs(items), device=device)
    try:
        return DistillServer(
            (host, port), slots, max_tokens=max_tokens, timeout=timeout, queue_timeout=queue_timeout,
            defaults=recipe_defaults(items), quiet=quiet,
        )
    except OSError as err:
        raise DistillError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another with --port (0 = any free port)") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m distill.serve",
        description="A local web page to try trained models: prompt, sliders, streamed text, several models side by side.",
    )
    parser.add_argument(
        "targets", nargs="+", metavar="MODEL_DIR|RECIPE.yaml",
        help="model folders, or recipes (every finished model folder of each); key=value overrides follow their recipe, "
             "e.g. recipes/tiny.yaml output_dir=models/try",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--max-tokens", type=int, default=256, help="most new tokens one request may ask for (default 256)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one generation may run before it is stopped (default 60)")
    parser.add_argument("--queue-timeout", type=float, default=10.0, help="seconds a request waits for a busy model before 503 (default 10)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    server = make_server(
        args.targets, host=args.host, port=args.port, max_tokens=args.max_tokens, timeout=args.timeout,
        queue_timeout=args.queue_timeout, device=args.device, quiet=args.quiet,
    )
    if not is_loopback(args.host):
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
