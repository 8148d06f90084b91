"""distill.serve over real HTTP: a tiny real model folder, the server in a thread on a free port."""
from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from distill.serve import main, make_server
from distill.serve_models import find_model_dirs


def build_model_dir(path: Path, tokenizer_dir: Path, *, name: str, role: str, seed: int = 0, val_ppl: float = 123.4) -> Path:
    """A finished model folder: a 2-layer width-32 LLaMA, the tokenizer and a distill.json."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    stamp = {
        "name": name, "role": role, "arch": "llama", "num_parameters": sum(p.numel() for p in model.parameters()),
        "seq_len": 128, "recipe": {}, "metrics": {"val_loss": 4.8, "val_ppl": val_ppl, "steps": 10},
    }
    (path / "distill.json").write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def serve_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("serve") / "student", tiny_tokenizer_dir, name="student", role="student")


def start(targets, **options):
    """A DistillServer on a free port, serving in a daemon thread."""
    options = {"port": 0, "quiet": True, **options}
    server = make_server(targets, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(serve_model_dir):
    server = start([serve_model_dir], max_tokens=256, timeout=30, queue_timeout=10)
    yield server
    stop(server)


def post(server, path, body, **kwargs):
    return requests.post(server.url + path.lstrip("/"), json=body, timeout=30, **kwargs)


def read_events(response) -> list[tuple[str, dict]]:
    """(event name, data) pairs of a text/event-stream body."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        events.append((name, json.loads(data)))
    return events


def test_models_config_and_page(server):
    models = requests.get(server.url + "api/models", timeout=10).json()
    assert [m["id"] for m in models] == ["student"]
    model = models[0]
    assert model["role"] == "student" and model["arch"] == "llama"
    assert model["val_ppl"] == pytest.approx(123.4) and model["num_parameters"] > 1000 and model["seq_len"] == 128
    config = requests.get(server.url + "api/config", timeout=10).json()
    assert config["max_tokens"] == 256 and config["defaults"]["temperature"] == 0.8
    page = requests.get(server.url, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="generate"' in page.text and "<script" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline


def test_generate_is_seeded(server):
    body = {"model": "student", "prompt": "London was", "max_new_tokens": 12, "seed": 3, "top_k": 0, "temperature": 1.0}
    first = post(server, "/api/generate", body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["model"] == "student" and isinstance(data["text"], str) and data["text"].strip()
    assert data["stopped"] == "end"
    assert post(server, "/api/generate", body).json()["text"] == data["text"]
    # model may be left out when only one is served
    assert post(server, "/api/generate", {"prompt": "The river", "max_new_tokens": 4}).status_code == 200
    # temperature 0 is greedy, as in the recipe and distill.generate: the seed does not matter
    greedy = [post(server, "/api/generate", {"prompt": "The river", "max_new_tokens": 6, "temperature": 0, "seed": s}) for s in (1, 2)]
    assert greedy[0].status_code == 200, greedy[0].text
    assert greedy[0].json()["text"] == greedy[1].json()["text"]


def test_stream_sends_pieces_then_done(server):
    body = {"model": "student", "prompt": "The river", "max_new_tokens": 24, "seed": 5, "top_k": 0}
    response = post(server, "/api/stream", body, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = read_events(response)
    pieces = [data["text"] for name, data in events if name == "message"]
    assert len(pieces) >= 2
    assert events[-1][0] == "done" and events[-1][1]["stopped"] == "end"
    assert "".join(pieces) == post(server, "/api/generate", body).json()["text"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"prompt": ""}, 400, "prompt: empty"),
        ({"prompt": "   \n"}, 400, "prompt: empty"),
        ({"prompt": "London", "max_new_tokens": 257}, 400, "limit of 256"),
        ({"prompt": "London", "max_new_tokens": 0}, 400, "out of range"),
        ({"prompt": "London", "temperature": "hot"}, 400, "temperature: \"hot\" is not a number"),
        ({"prompt": "London", "temperature": -0.5}, 400, "temperature: -0.5 is out of range [0, 5]; 0 = greedy"),
        ({"prompt": "London </s>"}, 400, "prompt: contains '</s>'"),
        ({"prompt": "London", "top_k": -1}, 400, "top_k: -1 is out of range"),
        ({"prompt": "London", "top_p": 1.5}, 400, "top_p"),
        ({"prompt": "London", "seed": 1.5}, 400, "seed: 1.5 is not a whole number"),
        ({"prompt": "London", "seed": True}, 400, "seed: true is not a number"),
        ({"prompt": "London", "seed": [1]}, 400, "is not a number"),
        ({"prompt": "London", "model": "nope"}, 400, "unknown model 'nope'"),
        ({"prompt": "London", "temprature": 1}, 400, "did you mean 'temperature'"),
        ({"prompt": 7}, 400, "prompt: missing or not a string"),
        (["London"], 400, "JSON object"),
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/stream"])
def test_bad_requests_get_json_errors(server, path, body, status, words):
    response = post(server, path, body)
    assert response.status_code == status
    assert words in response.json()["error"]


def test_malformed_bodies_and_paths(server):
    url = server.url + "api/generate"
    json_type = {"Content-Type": "application/json"}
    cases = [
        (requests.post(url, data=b"{not json", headers=json_type, timeout=10), 400, "malformed JSON"),
        (requests.post(url, data=b'{"prompt": NaN}', headers=json_type, timeout=10), 400, "prompt"),
        (requests.post(url, data='{"prompt": "a", "seed": NaN}', headers=json_type, timeout=10), 400, "not a finite number"),
        (requests.post(url, data=b"\xff\xfe", headers=json_type, timeout=10), 400, "malformed JSON"),
        (requests.post(url, data=b"x" * 70_000, headers=json_type, timeout=10), 413, "too large"),
        (requests.post(url, data=b'{"prompt": "a"}', headers={"Content-Type": "text/plain"}, timeout=10), 415, "application/json"),
        (requests.get(server.url + "nothing/here", timeout=10), 404, "no GET /nothing/here"),
        (requests.get(url, timeout=10), 405, "use POST"),
        (requests.delete(url, timeout=10), 501, "Unsupported method"),
        (requests.get(server.url, headers={"Host": "evil.example:80"}, timeout=10), 403, "refused"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]


def raw_exchange(server, payload: bytes) -> bytes:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_never_stops_the_server(server):
    raw_exchange(server, bytes(range(256)) * 4)
    raw_exchange(server, b"\r\n\r\n")
    assert raw_exchange(server, b"GET / HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.0 505")
    assert b"400" in raw_exchange(server, b"POST /api/generate HTTP/1.1\r\nContent-Length: -5\r\nContent-Type: application/json\r\n\r\n")
    # A body shorter than its Content-Length, then the client gives up.
    raw_exchange(server, b"POST /api/generate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro")
    # A stream whose client leaves at once.
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        body = json.dumps({"prompt": "London", "max_new_tokens": 64}).encode()
        sock.sendall(b"POST /api/stream HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    response = post(server, "/api/generate", {"prompt": "London was", "max_new_tokens": 4})
    assert response.status_code == 200 and response.json()["text"]


def test_busy_model_answers_503_after_the_queue_timeout(server):
    slot = server.slots["student"]
    assert slot.lock.acquire(timeout=10)  # stands in for a long generation, deterministically
    server.queue_timeout = 0.2
    try:
        start_time = time.monotonic()
        response = post(server, "/api/stream", {"prompt": "London", "max_new_tokens": 4})
        waited = time.monotonic() - start_time
        assert response.status_code == 503 and "busy" in response.json()["error"] and response.headers["Retry-After"] == "1"
        assert 0.2 <= waited < 5
    finally:
        server.queue_timeout = 10
        slot.lock.release()
    assert post(server, "/api/generate", {"prompt": "London", "max_new_tokens": 4}).status_code == 200


def test_generation_timeout_stops_early(server):
    server.generation_timeout = 1e-6  # already over after the first token
    try:
        response = post(server, "/api/stream", {"prompt": "London", "max_new_tokens": 100, "top_k": 0}, stream=True)
        events = read_events(response)
    finally:
        server.generation_timeout = 30
    assert events[-1][0] == "done" and events[-1][1]["stopped"] == "timeout"
    assert len([e for e in events if e[0] == "message"]) <= 3
    assert not server.slots["student"].lock.locked()


def test_recipe_target_serves_finished_folders(tmp_path, tiny_recipe, serve_model_dir):
    out = tmp_path / "out"
    shutil.copytree(serve_model_dir, out / "student")
    (out / "teachers" / "llama").mkdir(parents=True)  # unfinished: no distill.json
    assert find_model_dirs([tiny_recipe]) == [out / "student"]
    shutil.rmtree(out / "student")
    assert main([str(tiny_recipe), "--port", "0"]) == 2


def test_recipe_overrides_pick_the_output_dir(tmp_path, tiny_recipe, serve_model_dir):
    other = tmp_path / "other"
    shutil.copytree(serve_model_dir, other / "baseline")
    assert find_model_dirs([tiny_recipe, f"output_dir={other}"]) == [other / "baseline"]
    # An override follows the recipe it changes; options may stand between them.
    server = start([tiny_recipe, f"output_dir={other}"])
    try:
        assert [m["id"] for m in requests.get(server.url + "api/models", timeout=10).json()] == ["student"]
        assert server.defaults["max_new_tokens"] == 8  # the recipe's generate: section
    finally:
        stop(server)


def test_invalid_recipe_is_refused_naming_the_key(tmp_path, tiny_recipe, capsys):
    assert main([str(tiny_recipe), "student.alpha=2", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "student.alpha: 2.0 must be between 0 and 1" in err
    assert main([str(tiny_recipe), "student.alpah=0.5"]) == 2
    assert "did you mean 'alpha'?" in capsys.readouterr().err
    assert main(["output_dir=x", str(tiny_recipe)]) == 2
    assert "follows the recipe it changes" in capsys.readouterr().err


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(tmp_path), "--max-tokens", "0"]) == 2
    assert "--max-tokens" in capsys.readouterr().err
    assert main([str(tmp_path), "--port", "eighty"]) == 2  # a usage error is one line too
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--port" in err


def test_two_models_side_by_side(tmp_path, tiny_tokenizer_dir, serve_model_dir):
    teacher = build_model_dir(tmp_path / "teacher", tiny_tokenizer_dir, name="student", role="teacher", seed=1)
    server = start([serve_model_dir, teacher], queue_timeout=0.2)
    try:
        ids = [m["id"] for m in requests.get(server.url + "api/models", timeout=10).json()]
        assert ids == ["student", "teacher-student"]
        assert "pick one of" in post(server, "/api/generate", {"prompt": "London"}).json()["error"]
        # Each model has its own lock: a busy student does not block the teacher.
        with server.slots["student"].lock:
            assert post(server, "/api/generate", {"prompt": "London", "model": "teacher-student", "max_new_tokens": 4}).status_code == 200
    finally:
        stop(server)


@pytest.mark.slow
def test_command_line_end_to_end(serve_model_dir):
    """python -m distill.serve MODEL_DIR --port 0: prints its URL, answers, stops cleanly on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "distill.serve", str(serve_model_dir), "--port", "0", "--quiet", "--max-tokens", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()  # "serving student (student) at http://127.0.0.1:PORT/  (Ctrl+C to stop)"
        assert "serving student (student) at http://127.0.0.1:" in line, process.stderr.read() if process.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        assert requests.get(url + "api/config", timeout=10).json()["max_tokens"] == 16
        response = requests.post(url + "api/generate", json={"prompt": "London", "max_new_tokens": 4}, timeout=30)
        assert response.status_code == 200 and response.json()["text"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
