"""`slimcv serve`: a real uvicorn server on a free loopback port, answered like the predictor, bounded, and stoppable."""
from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from slimcv import deploy  # noqa: E402
from slimcv.deploy.server import ServeConfig, create_app  # noqa: E402


class Slow:
    """The real predictor, made slow: requests pile up the way they do behind a big model."""

    def __init__(self, predictor, seconds: float) -> None:
        self.inner, self.seconds = predictor, seconds
        self.task, self.class_names, self.path, self.runtime = predictor.task, predictor.class_names, "slow", "ort"

    def prepare(self, image):
        return self.inner.prepare(image)

    def predict_prepared(self, items, probs=False, batch_size=8):
        time.sleep(self.seconds)
        return self.inner.predict_prepared(items, probs, batch_size)


@contextmanager
def running(predictor, **cfg):
    """The app on a uvicorn server in a thread, listening on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, ServeConfig(**cfg)), log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _post(url: str, body: bytes, content_type: str, timeout: float = 30) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:  # a 4xx answer: its status and body
        return e.code, e.read()


def test_served_predictions_equal_the_predictors_and_requests_are_batched(seg):
    path, images = seg
    predictor = deploy.load(path)
    with running(predictor, max_batch_size=8, max_wait_ms=100) as (url, _):
        def ask(i: int) -> np.ndarray:
            status, headers, body = _post(f"{url}/predict", *_multipart(_png(images[i % len(images)])))
            assert status == 200 and headers["content-type"] == "image/png", body[:200]
            return np.asarray(Image.open(io.BytesIO(body)))

        with ThreadPoolExecutor(8) as pool:
            masks = list(pool.map(ask, range(16)))
        for i, mask in enumerate(masks):
            np.testing.assert_array_equal(mask, predictor(images[i % len(images)]).mask)
        status, _, body = _post(f"{url}/predict?format=json", _png(images[0]), "image/png")
        answer = json.loads(body)
        assert status == 200 and np.array_equal(np.asarray(answer["mask"]), predictor(images[0]).mask)
        assert abs(sum(answer["classes"].values()) - 1) < 1e-3
        metrics = _get(f"{url}/metrics")[1].decode()
    calls = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("slimcv_batch_size_count")))
    assert calls < 17, "16 concurrent requests with a 100 ms batching window ran one by one"
    assert 'slimcv_requests_total{path="/predict",status="200"} 17.0' in metrics


def test_classification_answers_json_with_topk(cls):
    path, images = cls
    predictor = deploy.load(path)
    with running(predictor) as (url, _):
        status, _, body = _post(f"{url}/predict?topk=2", *_multipart(_png(images[1])))
    answer, expected = json.loads(body), predictor(images[1])
    assert status == 200 and answer["label"] == expected.label and answer["name"] == expected.name
    assert [t["label"] for t in answer["topk"]] == [t["label"] for t in expected.topk(2)]


def test_health_and_metrics_answer(seg):
    path, _ = seg
    with running(deploy.load(path)) as (url, _):
        status, body = _get(f"{url}/health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["task"] == "segmentation"
        status, body = _get(f"{url}/metrics")
    text = body.decode()
    for name in ("slimcv_requests_total", "slimcv_errors_total", "slimcv_request_latency_seconds_bucket",
                 "slimcv_batch_size_bucket", "slimcv_queue_depth"):
        assert name in text


def test_each_bad_request_gets_its_4xx_with_one_sentence(seg):
    path, images = seg
    with running(deploy.load(path), max_upload_mb=0.01) as (url, _):
        cases = {
            400: [_multipart(b"this is no image"), _multipart(_png(images[0][:40, :40]), field="photo"),
                  (b"", "image/png")],
            413: [(b"\0" * 20_000, "image/png")],
            415: [(b"a=1", "application/x-www-form-urlencoded"), (b"{}", "application/json")],
        }
        for status, requests in cases.items():
            for body, ctype in requests:
                got, _, answer = _post(f"{url}/predict", body, ctype)
                reason = json.loads(answer)["error"]
                assert got == status, reason
                assert reason.count(". ") == 0 and reason.endswith("."), reason
        assert _post(f"{url}/predict?format=xml", _png(images[0][:20, :20]), "image/png")[0] == 400
        assert _post(f"{url}/predict?topk=x", _png(images[0][:20, :20]), "image/png")[0] == 400
        assert _get(f"{url}/health")[0] == 200  # still healthy


def test_a_full_queue_answers_503_with_retry_after_and_recovers(seg):
    path, images = seg
    predictor = deploy.load(path)
    body = _png(images[0])
    with running(Slow(predictor, 0.4), max_batch_size=1, max_wait_ms=0, queue_size=1) as (url, _):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _post(f"{url}/predict", body, "image/png"), range(8)))
        statuses = sorted(a[0] for a in answers)
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(a for a in answers if a[0] == 503)
        assert busy[1]["retry-after"] == "1" and "busy" in json.loads(busy[2])["error"]
        assert _get(f"{url}/health")[0] == 200
        assert _post(f"{url}/predict", body, "image/png")[0] == 200
        assert "slimcv_errors_total{reason=\"queue_full\"}" in _get(f"{url}/metrics")[1].decode()


def test_shutdown_finishes_the_requests_in_flight(seg):
    path, images = seg
    predictor = deploy.load(path)
    body = _png(images[0])
    with running(Slow(predictor, 0.5), max_batch_size=1, max_wait_ms=0) as (url, server):
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(_post, f"{url}/predict", body, "image/png") for _ in range(3)]
            time.sleep(0.3)  # all three sent, the first being computed, two queued
            server.should_exit = True
            answers = [f.result(timeout=30) for f in futures]
    assert [a[0] for a in answers] == [200, 200, 200]
    for a in answers:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(a[2]))), predictor(images[0]).mask)


@pytest.mark.parametrize("stop,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_slimcv_serve_command_serves_and_stops_cleanly(seg, stop, workers):
    path, images = seg
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "slimcv.cli", "serve", str(path), "--port", str(port),
                             "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if _get(f"http://127.0.0.1:{port}/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        status, _, body = _post(f"http://127.0.0.1:{port}/predict", _png(images[2]), "image/png")
        assert status == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), deploy.load(path)(images[2]).mask)
    finally:
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=30)
    # Ctrl-C ends with status 0; SIGTERM, after the same graceful shutdown, ends the process by the signal
    assert proc.returncode == (0 if stop == signal.SIGINT else -stop), out
    assert "Application shutdown complete" in out and "Traceback" not in out and "interrupted" not in out


def test_the_python_entry_points_are_the_functions():
    import slimcv.deploy.server  # noqa: F401  (importing the module must not shadow deploy.serve)

    assert callable(deploy.serve) and deploy.create_app is create_app and deploy.ServeConfig is ServeConfig
    assert callable(deploy.predict_files)


def test_a_decompression_bomb_gets_413_before_it_is_decoded(seg, tmp_path):
    import io

    from PIL import Image

    path, _ = seg
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG", optimize=True)
    with running(deploy.load(path)) as (url, _):
        got, _, answer = _post(f"{url}/predict", buf.getvalue(), "image/png")
        assert got == 413 and "megapixels" in json.loads(answer)["error"]
        assert _get(f"{url}/health")[0] == 200


def test_unknown_paths_and_methods_get_slimcvs_one_sentence_body(seg):
    path, _ = seg
    with running(deploy.load(path)) as (url, _):
        status, body = _get(f"{url}/nowhere")
        assert status == 404 and json.loads(body)["error"].startswith("There is no /nowhere")
        status, body = _get(f"{url}/predict")
        assert status == 405 and "does not take GET" in json.loads(body)["error"]
