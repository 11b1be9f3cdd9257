"""``slimcv serve``: a deployed model behind HTTP (FastAPI + uvicorn) with dynamic micro-batching.

Requests are decoded off the event loop, queued in a bounded queue (full: 503 with Retry-After), grouped into
batches of up to ``max_batch_size`` images and run in one inference thread. A batch takes what is queued and
waits up to ``max_wait_ms`` only for requests already being received, so a lone request never waits. ``GET /health`` and ``GET /metrics`` (Prometheus text) watch it; stopping the server (Ctrl-C,
SIGTERM) finishes the requests in flight first. The server keeps no state between requests: run more replicas
behind a load balancer to scale out.
"""

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv.errors import SlimcvError

ENV_SETTINGS = "SLIMCV_SERVE_SETTINGS"  # how `--workers N` hands the settings to each uvicorn worker process


@dataclass(frozen=True)
class ServeConfig:
    """The server's limits: batching, queue, upload size, and which runtime runs the model."""

    max_batch_size: int = field(default=8, metadata={"help": "images per inference call; 1 turns batching off"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "how long a batch waits for more requests"})
    queue_size: int = field(default=64, metadata={"help": "requests that may wait; more get 503 + Retry-After"})
    max_upload_mb: float = field(default=10.0, metadata={"help": "largest accepted upload, MiB"})
    runtime: str | None = field(default=None, metadata={"help": "runtime from the table: ort, ort-cuda, openvino, "
                                                        "openvino-f32 (default: the one quantize chose, else ort)"})
    threads: int | None = field(default=None, metadata={"help": "intra-op threads of the runtime (default: the "
                                                        "runtime's)"})
    max_pixels: int | None = field(default=None, metadata={
        "help": "larger images get 413 before they are decoded (default: 50 million, or 64 times the model's "
                "input)"})
    score_threshold: float | None = field(default=None, metadata={
        "help": "detection: answer boxes scoring at least this (default: the one the model file records)"})

    def check(self) -> "ServeConfig":
        if self.max_batch_size < 1 or self.queue_size < 1:
            raise SlimcvError(f"--max-batch-size and --queue-size must be at least 1 (got {self.max_batch_size} "
                              f"and {self.queue_size}).")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0:
            raise SlimcvError(f"--max-wait-ms must be >= 0 and --max-upload-mb > 0 (got {self.max_wait_ms} and "
                              f"{self.max_upload_mb}).")
        return self


class QueueFull(Exception):
    """The request queue holds ``queue_size`` requests already."""


class BadRequest(Exception):
    """A request the server answers with ``status`` and a one-sentence reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Metrics:
    """Prometheus counters and histograms of one app (its own registry, so several apps never share counts)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("slimcv_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)
        self.errors = Counter("slimcv_errors", "requests answered with an error, by reason", ["reason"],
                              registry=self.registry)
        self.latency = Histogram("slimcv_request_latency_seconds", "time from request to response on /predict",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch = Histogram("slimcv_batch_size", "images per inference call",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue = Gauge("slimcv_queue_depth", "requests waiting for inference", registry=self.registry)
        self.in_flight = Gauge("slimcv_requests_in_flight", "requests being answered", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class _Job:
    x: np.ndarray
    size: tuple[int, int]
    probs: bool
    future: asyncio.Future


class Batcher:
    """Groups queued images into batches and runs them in one inference thread, off the event loop."""

    def __init__(self, predictor: Any, cfg: ServeConfig, metrics: Metrics) -> None:
        self.predictor, self.cfg, self.metrics = predictor, cfg, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=cfg.queue_size)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="slimcv-infer")
        self.task: asyncio.Task | None = None
        self.arriving = 0  # requests received but still being read and decoded: worth waiting for


    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, x: np.ndarray, size: tuple[int, int], probs: bool = False) -> Any:
        """The prediction for one preprocessed image; raises QueueFull instead of waiting for room."""
        job = _Job(x, size, probs, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        self.metrics.queue.set(self.queue.qsize())
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.cfg.max_wait_ms / 1000
            while len(batch) < self.cfg.max_batch_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0 or not self.arriving:  # nobody else on the way: waiting would only add latency
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.metrics.queue.set(self.queue.qsize())
            self.metrics.batch.observe(len(batch))
            try:
                preds = await loop.run_in_executor(self.executor, self._infer, batch)
            except Exception as e:  # the model failed: every waiting request gets the error, the server lives on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
            else:
                for job, pred in zip(batch, preds):
                    if not job.future.done():
                        job.future.set_result(pred)
            finally:
                for _ in batch:
                    self.queue.task_done()

    def _infer(self, batch: list[_Job]) -> list[Any]:
        return self.predictor.predict_prepared([(j.x, j.size) for j in batch], probs=any(j.probs for j in batch),
                                               batch_size=len(batch))

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and its thread."""
        await self.queue.join()
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=True)


def create_app(predictor: Any, cfg: ServeConfig | None = None):
    """The FastAPI app serving ``predictor`` (a :class:`slimcv.deploy.Predictor`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    cfg = (cfg or ServeConfig()).check()
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["batcher"] = Batcher(predictor, cfg, metrics)
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="slimcv", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics

    def error(status: int, reason: str, path: str, kind: str, headers: dict[str, str] | None = None):
        metrics.errors.labels(kind).inc()
        metrics.requests.labels(path, str(status)).inc()
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Any, exc: StarletteHTTPException) -> Any:
        """Unknown paths and methods answer like every other error: one sentence in {"error": ...}."""
        return error(exc.status_code, _http_reason(exc.status_code, request.url.path, request.method, exc.detail),
                     "other", f"http_{exc.status_code}", getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> Any:
        metrics.requests.labels("/health", "200").inc()
        return {"status": "ok", "model": str(getattr(predictor, "path", "")), "task": predictor.task,
                "runtime": getattr(predictor, "runtime", None), "max_batch_size": cfg.max_batch_size,
                "queue_depth": state["batcher"].queue.qsize() if "batcher" in state else 0}

    @app.get("/metrics")
    async def prometheus() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        metrics.requests.labels("/metrics", "200").inc()
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            batcher = state["batcher"]
            batcher.arriving += 1
            try:
                fmt, topk = _options(request, predictor.task)
                data = await _read_image_bytes(request, int(cfg.max_upload_mb * 1024 * 1024))
                x, size = await run_in_threadpool(_decode, predictor, data)
            finally:
                batcher.arriving -= 1
            pred = await batcher.submit(x, size, probs=False)
            response = _answer(predictor, pred, fmt, topk)
        except BadRequest as e:
            return error(e.status, str(e), "/predict", "bad_request")
        except QueueFull:
            return error(503, f"The server is busy (all {cfg.queue_size} queue places are taken); retry shortly.",
                         "/predict", "queue_full", {"Retry-After": "1"})
        except Exception as e:  # a failure inside the model: answer it, keep serving
            return error(500, f"Inference failed ({type(e).__name__}: {str(e)[:200]}).", "/predict", "inference")
        finally:
            metrics.in_flight.dec()
        metrics.latency.observe(time.perf_counter() - start)
        metrics.requests.labels("/predict", "200").inc()
        return response

    return app


def _http_reason(status: int, path: str, method: str, detail: Any) -> str:
    if status == 404:
        return f"There is no {path}; the server answers POST /predict, GET /health and GET /metrics."
    if status == 405:
        return f"{path} does not take {method}; see POST /predict, GET /health and GET /metrics."
    return str(detail).rstrip(".") + "."


def _options(request: Any, task: str) -> tuple[str, int]:
    q = request.query_params
    fmt = q.get("format", "png" if task == "segmentation" else "json")
    if fmt not in ("png", "json") or (task != "segmentation" and fmt == "png"):
        allowed = "png or json" if task == "segmentation" else "json"
        raise BadRequest(400, f"format={fmt!r} is not offered; use format={allowed}.")
    try:
        topk = int(q.get("topk", 5))
    except ValueError:
        raise BadRequest(400, f"topk={q.get('topk')!r} is not a whole number; use e.g. topk=5.") from None
    if topk < 1:
        raise BadRequest(400, f"topk must be at least 1, got {topk}.")
    return fmt, topk


async def _read_image_bytes(request: Any, limit: int) -> bytes:
    """The uploaded image's bytes: a multipart form's ``file`` field, or the raw body sent as image/*."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"The upload is {_size(int(declared))}; the limit is {_size(limit)} (--max-upload-mb).")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"The upload exceeds the limit of {_size(limit)} (--max-upload-mb).")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def once() -> AsyncIterator[bytes]:
            yield bytes(body)

        try:
            form = await MultiPartParser(request.headers, once()).parse()
        except MultiPartException as e:
            raise BadRequest(400, f"The multipart form cannot be read ({e}); send the image as the 'file' "
                             "field.") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            fields = ", ".join(repr(k) for k in form.keys()) or "none"
            raise BadRequest(400, f"The form has no 'file' field with an image (fields: {fields}); send it as "
                             "-F file=@image.png.")
        return await upload.read()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        if not body:
            raise BadRequest(400, "The request body is empty; send an image.")
        return bytes(body)
    raise BadRequest(415, f"Content type {ctype or 'none'!r} is not an image upload; send multipart/form-data with "
                     "a 'file' field, or the image itself as image/png or image/jpeg.")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _decode(predictor: Any, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    from slimcv.deploy.images import DEFAULT_MAX_PIXELS, open_image

    limit = getattr(predictor, "max_pixels", DEFAULT_MAX_PIXELS)  # any object with a predictor's methods serves
    try:
        rgb = open_image(data, limit, name="The image")  # its size is checked before decoding
    except SlimcvError as e:
        text = str(e)
        if "megapixels" in text or "too many pixels" in text:
            raise BadRequest(413, text) from None
        if text.startswith("Cannot read"):
            raise BadRequest(400, "The upload is not an image Pillow can read (PNG, JPEG, BMP, TIFF, WebP); check "
                             "the file.") from None
        raise BadRequest(400, text) from None
    if rgb.width == 0 or rgb.height == 0:
        raise BadRequest(400, "The image is empty (0 pixels); send an image with pixels.")
    return predictor.prepare(rgb), rgb.size


def _answer(predictor: Any, pred: Any, fmt: str, topk: int) -> Any:
    from fastapi.responses import JSONResponse, Response

    if predictor.task == "classification":
        top = pred.topk(topk)
        return JSONResponse({"label": pred.label, "name": pred.name, "score": top[0]["score"], "topk": top})
    if predictor.task == "detection":
        return JSONResponse({"boxes": pred.boxes(), "score_threshold": predictor.score_threshold})
    if fmt == "png":
        buf = io.BytesIO()
        Image.fromarray(pred.mask.astype(np.uint8), mode="L").save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")
    from slimcv.deploy.predictor import class_shares

    return JSONResponse({"height": int(pred.mask.shape[0]), "width": int(pred.mask.shape[1]),
                         "mask": pred.mask.tolist(), "classes": class_shares(pred.mask, predictor.class_names)})


def app_from_env():
    """The app for one uvicorn worker process of ``slimcv serve --workers N`` (settings in the environment)."""
    from slimcv.deploy.predictor import load

    settings = json.loads(os.environ[ENV_SETTINGS])
    cfg = ServeConfig(**settings["config"])
    return create_app(load(settings["artifact"], threads=cfg.threads, runtime=cfg.runtime, max_pixels=cfg.max_pixels,
                           score_threshold=cfg.score_threshold), cfg)


def _check_port(host: str, port: int) -> None:
    """One sentence, before the server starts, when the address cannot be listened on (a port in use)."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SlimcvError(f"Cannot listen on {host}:{port} ({(e.strerror or str(e)).lower()}); another server "
                              "uses that port: choose another --port or stop it.") from None


def serve(artifact: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          cfg: ServeConfig | None = None, log_level: str = "info") -> None:
    """Serve a deployed model (an .onnx file with its sidecar, or a quantize folder) until stopped."""
    try:
        import uvicorn
    except ImportError:
        raise SlimcvError("slimcv serve needs FastAPI and uvicorn: pip install 'slimcv[serve]'.") from None
    from slimcv.deploy.predictor import load

    cfg = (cfg or ServeConfig()).check()
    if not 0 <= port <= 65535 or workers < 1:
        raise SlimcvError(f"--port must be 0-65535 and --workers at least 1 (got {port} and {workers}).")
    predictor = load(artifact, threads=cfg.threads, runtime=cfg.runtime, max_pixels=cfg.max_pixels,
                     score_threshold=cfg.score_threshold)  # fails here, in one sentence, if bad
    _check_port(host, port)
    options = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
    try:
        if workers == 1:
            uvicorn.run(create_app(predictor, cfg), **options)
        else:
            os.environ[ENV_SETTINGS] = json.dumps({"artifact": str(artifact), "config": asdict(cfg)})
            uvicorn.run("slimcv.deploy.server:app_from_env", factory=True, workers=workers, **options)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal way to stop
        pass
