"""Serving load test: `slimcv serve` on loopback, p50/p99 latency and requests/s at several concurrencies.

    python benchmarks/serve.py [--requests 200] [--quick]

For the CamVid student (U-Net width 4, images 360x480 resized to 176x240 inside the predictor) and the CIFAR
ResNet-20 (32x32), each exported to ONNX and served in ONNX Runtime with one intra-op thread, at concurrency 1,
4 and 16 with micro-batching on (up to 8 images, 5 ms window) and off (batch 1). Latency does not depend on the
weights' values, so the networks are untrained unless ``--camvid-run``/``--cifar-run`` name trained run folders.
Every answer is compared with the predictor's own output for that image: a lost or wrong answer is counted.
Then: the server's resident memory before and after ``--soak`` requests, and an overload (more concurrent
clients than the queue holds) that must be answered with 503s while the server stays healthy.

The client runs in this process (threads over keep-alive HTTP connections) and shares the machine's cores
with the server: on a 2-core machine the figures are a lower bound of what a dedicated server does.
Prints a table and writes benchmarks/results/serve.json.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
DATA = HERE.parent.parent / "shared" / "data"
MODELS = {  # name: (registered model, kwargs, data spec, trained-run flag)
    "camvid_student": ("unet", {"base_width": 4, "depth": 4}, f"camvid:{DATA / 'camvid'}", "camvid_run"),
    "cifar_resnet20": ("resnet20", {}, f"cifar10:{DATA / 'cifar10'}", "cifar_run"),
}


def export_model(name: str, tmp: Path, run: str | None) -> tuple[Path, list[bytes], list[np.ndarray]]:
    """The ONNX file, 16 validation images as PNG bytes, and the predictor's answer for each."""
    import torch

    import slimcv
    from slimcv import deploy
    from slimcv.data import load_data

    arch, kwargs, spec, _ = MODELS[name]
    data = {"spec": spec, "workers": 0, **({"size": [176, 240]} if arch == "unet" else {})}
    bundle = load_data(data)
    torch.manual_seed(0)
    source = run or slimcv.create_model(arch, bundle.num_classes, **kwargs).eval()
    path = slimcv.export(source, tmp / f"{name}.onnx", data, samples=2).path
    raw = bundle.val.dataset if hasattr(bundle.val, "dataset") else bundle.val
    images = [raw.load(i)[0].permute(1, 2, 0).numpy() for i in range(0, 16 * 5, 5)]
    predictor = deploy.load(path, threads=1)
    expected = [predictor(im).mask if predictor.task == "segmentation" else predictor(im).label for im in images]
    pngs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return path, pngs, expected


class Server:
    """`slimcv serve` in its own process on a free loopback port."""

    def __init__(self, path: Path, **flags: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        args = [sys.executable, "-m", "slimcv.cli", "serve", str(path), "--port", str(self.port), "--threads", "1"]
        for k, v in flags.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def get(self, path: str) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def load(server: Server, pngs: list[bytes], expected: list[Any], task: str, concurrency: int,
         requests: int) -> dict[str, Any]:
    """``requests`` POSTs from ``concurrency`` closed-loop clients; latency, rate, and every answer checked."""
    latencies: list[float] = []
    tally = {"ok": 0, "wrong": 0, "busy": 0, "failed": 0}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            k = i % len(pngs)
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=pngs[k], headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                body = r.read()
            except OSError:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                with lock:
                    tally["failed"] += 1
                continue
            took = time.perf_counter() - start
            kind = "busy" if r.status == 503 else "failed" if r.status != 200 else \
                "ok" if _same(body, expected[k], task) else "wrong"
            with lock:
                tally[kind] += 1
                if kind == "ok":
                    latencies.append(took)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": requests, **tally, "wall_s": round(wall, 3),
            "req_per_s": round(tally["ok"] / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None}


def _same(body: bytes, expected: Any, task: str) -> bool:
    if task == "segmentation":
        return np.array_equal(np.asarray(Image.open(io.BytesIO(body))), expected)
    return json.loads(body)["label"] == expected


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="requests per (model, batching, concurrency)")
    p.add_argument("--soak", type=int, default=2000, help="requests between the two memory readings")
    p.add_argument("--camvid-run", help="trained CamVid student run folder (default: untrained)")
    p.add_argument("--cifar-run", help="trained CIFAR ResNet-20 run folder (default: untrained)")
    p.add_argument("--quick", action="store_true", help="20 requests per cell, 200 for the soak")
    p.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    args = p.parse_args()
    if args.quick:
        args.requests, args.soak = 20, 200
    from slimcv._console import print_table
    from slimcv.hardware import cpu_flags
    from slimcv.hardware import cpu_features

    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
    out: dict[str, Any] = {"cpu": cpu_features(), "cpu_flags": flags, "cores": os.cpu_count(),
                           "runtime": "ort", "threads": 1, "models": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path, pngs, expected = export_model(name, Path(tmp), getattr(args, MODELS[name][3]))
            task = "segmentation" if MODELS[name][0] == "unet" else "classification"
            cells = []
            for batching, flags_ in (("on", {"max_batch_size": 8, "max_wait_ms": 5}), ("off", {"max_batch_size": 1})):
                server = Server(path, **flags_, queue_size=256)
                try:
                    load(server, pngs, expected, task, 2, 10)  # warm-up
                    for c in (1, 4, 16):
                        r = {"batching": batching, **load(server, pngs, expected, task, c, args.requests)}
                        cells.append(r)
                        rows.append((name, batching, c, r["p50_ms"], r["p99_ms"], r["req_per_s"], r["ok"],
                                     r["wrong"] + r["failed"] + r["busy"]))
                finally:
                    server.stop()
            out["models"][name] = {"load": cells, **soak_and_overload(path, pngs, expected, task, args.soak)}
    print_table("slimcv serve on loopback (ORT, 1 thread)", ["model", "batching", "clients", "p50 ms", "p99 ms",
                                                            "req/s", "ok", "lost/wrong"], rows)
    for name, m in out["models"].items():
        print(f"{name}: RSS {m['rss_mib_before']:.0f} -> {m['rss_mib_after']:.0f} MiB after {m['soak']['ok']} "
              f"requests; overload {m['overload']['concurrency']} clients on a queue of "
              f"{m['overload']['queue_size']}: {m['overload']['ok']} answered, {m['overload']['busy']} got 503, "
              f"{m['overload']['wrong'] + m['overload']['failed']} lost/wrong, healthy after: {m['healthy_after']}")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def soak_and_overload(path: Path, pngs: list[bytes], expected: list[Any], task: str, soak: int) -> dict[str, Any]:
    """Resident memory before/after ``soak`` requests; then 32 clients against a queue of 4."""
    server = Server(path, max_batch_size=8, queue_size=256)
    try:
        load(server, pngs, expected, task, 4, 50)
        before = server.rss_mib()
        soaked = load(server, pngs, expected, task, 4, soak)
        after = server.rss_mib()
    finally:
        server.stop()
    server = Server(path, max_batch_size=1, queue_size=4)
    try:
        overload = {"queue_size": 4, **load(server, pngs, expected, task, 32, 320)}
        healthy = server.get("/health")[0] == 200 and load(server, pngs, expected, task, 1, 5)["ok"] == 5
    finally:
        server.stop()
    return {"rss_mib_before": round(before, 1), "rss_mib_after": round(after, 1), "soak": soaked,
            "overload": overload, "healthy_after": healthy}


if __name__ == "__main__":
    main()
