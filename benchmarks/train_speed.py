"""Training speed on this CPU: images/s of slimcv's training step in each precision and memory layout, the setting
its start-up probe picks, and a plain hand-written PyTorch loop as the reference; then what decoding costs, how
many threads and workers pay off, all in one run.

    python benchmarks/train_speed.py [--data ../shared/data] [--rounds 3] [--quick]

Steps run on real batches already in memory (data loading is measured on its own). Variants are interleaved
round by round (a busy neighbour slows every one alike) and the median per variant is reported. Target: >= 2x
the images/s of the FP32 NCHW default where the CPU computes bf16 natively, never slower elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_overhead import hand_loop  # noqa: E402  (the hand-written reference loop, shared)
MODELS = {  # name: model, kwargs, dataset, size, batch, optimizer
    "camvid_teacher": ("unet", {"base_width": 16, "depth": 4}, "camvid", [176, 240], 8, "adam"),
    "camvid_student": ("unet", {"base_width": 4, "depth": 4}, "camvid", [176, 240], 8, "adam"),
    "cifar_resnet20": ("resnet20", {}, "cifar10", None, 128, "sgd"),
}


def _data(name: str, data_root: Path, batch: int, size, cache: bool):
    from slimcv.data import load_data

    spec = {"spec": f"{name}:{data_root / name}", "batch_size": batch, "workers": 0}
    if size:
        spec["size"] = size
    data = load_data(spec)
    if cache:
        from slimcv.data.memory import keep_in_memory

        keep_in_memory(data.train, progress=False, max_bytes=2**62)
    return data


def _batches(data, batch: int, n: int):
    from slimcv.data import make_loader

    loader = make_loader(data.train, batch, train=True, workers=0, seed=0, ignore_index=data.info.ignore_index)
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == n:
            break
    return out


def _optimizer(kind: str, params):
    from slimcv.config import OptimConfig
    from slimcv.engine.optim import build_optimizer

    cfg = OptimConfig(name="adam", lr=0.002) if kind == "adam" else OptimConfig(name="sgd", lr=0.1, nesterov=True)
    return build_optimizer(params, cfg)


def _fresh(name: str, kwargs: dict, num_classes: int, setting, opt: str, steps: int):
    """A seeded model in ``setting``'s memory layout, its optimizer and a constant schedule."""
    import torch

    from slimcv.config import ScheduleConfig
    from slimcv.engine.optim import build_scheduler
    from slimcv.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes, **kwargs)
    if setting is not None and setting.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(opt, model.parameters())
    return model, optimizer, build_scheduler(optimizer, ScheduleConfig(name="constant"), 1000, steps)


def measure_steps(key: str, data_root: Path, rounds: int, steps: int) -> dict:
    import torch

    from slimcv.engine import speed as S
    from slimcv.engine.loop import SupervisedLoss, train_one_epoch
    from slimcv.models import create_model

    name, kwargs, ds, size, batch, opt = MODELS[key]
    data = _data(ds, data_root, batch, size, cache=False)
    batches = _batches(data, batch, steps)
    device = torch.device("cpu")
    objective = SupervisedLoss(data.info.ignore_index)
    settings = S.candidates(device)
    variants: dict[str, tuple] = {}
    for label, setting in [("hand-written loop (fp32 NCHW)", None)] + [(f"slimcv {s.label}", s) for s in settings]:
        variants[label] = (*_fresh(name, kwargs, data.num_classes, setting, opt, len(batches)), setting)

    def run(label: str, few=None) -> None:
        model, optimizer, scheduler, setting = variants[label]
        todo = batches if few is None else batches[:few]
        if setting is None:
            hand_loop(model, todo, optimizer, scheduler)  # the reference: what a user writes by hand
        else:
            train_one_epoch(model, objective, todo, optimizer, scheduler, device, amp=setting.amp,
                            channels_last=setting.channels_last)

    for label in variants:  # warm-up: oneDNN builds its kernels on the first step
        run(label, few=1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for label in variants:
            t = time.perf_counter()
            run(label)
            times[label].append(time.perf_counter() - t)
    images = len(batches) * batch
    rates = {k: images / statistics.median(v) for k, v in times.items()}
    # the probe on a fresh model, as fit() runs it
    torch.manual_seed(0)
    model = create_model(name, data.num_classes, **kwargs)
    choice = S.choose(model, objective, lambda: batches[0], device, lambda p: _optimizer(opt, p))
    base = rates["slimcv fp32 NCHW"]
    return {"model": key, "batch_size": batch, "steps_per_round": len(batches), "rounds": rounds,
            "images_per_s": rates, "speedup_vs_fp32_nchw": {k: v / base for k, v in rates.items()},
            "probe": choice.to_json(), "probe_choice": choice.setting.label,
            "probe_choice_speedup": rates[f"slimcv {choice.setting.label}"] / base}


def measure_data(key: str, data_root: Path, n: int) -> dict:
    """Milliseconds per image: decode + augment from disk, augment from memory, decoding alone."""
    _, _, ds, size, batch, _ = MODELS[key]
    disk = _data(ds, data_root, batch, size, cache=False)
    mem = _data(ds, data_root, batch, size, cache=True)
    idx = list(range(0, len(disk.train), max(1, len(disk.train) // n)))[:n]

    def per_image(fn) -> float:
        t = time.perf_counter()
        for i in idx:
            fn(i)
        return (time.perf_counter() - t) / len(idx) * 1000

    base = disk.train
    return {"model": key, "samples": len(idx), "decode_ms": per_image(base.load),
            "decode_augment_ms": per_image(base.__getitem__), "augment_from_memory_ms": per_image(mem.train.__getitem__)}


CHILD = """
import json, os, sys
sys.path.insert(0, os.environ["BENCH_DIR"])
import train_speed as T
print(json.dumps(T.child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
"""


def child(mode: str, key: str, threads: int, steps: int):
    """Run in a fresh process (OpenMP reads OMP_WAIT_POLICY once, at start): the fastest setting's images/s on
    pre-made batches ("steps"), or the worker rows of measure_workers ("workers")."""
    import torch

    torch.set_num_threads(threads)
    data_root = Path(os.environ["DATA_ROOT"])
    if mode == "workers":
        return measure_workers(key, data_root, steps)
    from slimcv.engine import speed as S
    from slimcv.engine.loop import SupervisedLoss, train_one_epoch

    name, kwargs, ds, size, batch, opt = MODELS[key]
    data = _data(ds, data_root, batch, size, cache=False)
    batches = _batches(data, batch, steps)
    s = S.candidates(torch.device("cpu"))[-1]
    model, o, sch = _fresh(name, kwargs, data.num_classes, s, opt, steps)
    obj, dev = SupervisedLoss(data.info.ignore_index), torch.device("cpu")
    train_one_epoch(model, obj, batches[:1], o, sch, dev, amp=s.amp, channels_last=s.channels_last)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        train_one_epoch(model, obj, batches, o, sch, dev, amp=s.amp, channels_last=s.channels_last)
        ts.append(time.perf_counter() - t)
    return {"setting": s.label, "images_per_s": len(batches) * batch / statistics.median(ts)}


def _in_child(mode: str, key: str, threads: int, steps: int, data_root: Path, policy: str | None = None):
    env = {**os.environ, "BENCH_DIR": str(Path(__file__).parent), "DATA_ROOT": str(data_root),
           "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, mode, key, str(threads), str(steps)], env=env,
                         capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure_threads(key: str, data_root: Path, steps: int) -> list[dict]:
    """Images/s at 1 and all threads (OpenMP spinning or passive), with the machine idle and with one busy core."""
    rows = []
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads, policy in ((1, None), (_cores(), None), (_cores(), "PASSIVE")):
                r = _in_child("steps", key, threads, steps, data_root, policy)
                rows.append({"model": key, "neighbour": "one busy core" if busy else "idle", "threads": threads,
                             "omp_wait_policy": policy or "default", **r})
                print(f"  threads {threads} {policy or ''} {'busy' if busy else 'idle'}: {r['images_per_s']:.1f} img/s",
                      flush=True)
        finally:
            if hog is not None:
                hog.kill()
    return rows


def measure_workers(key: str, data_root: Path, batches: int, choices=(0, 1, 2)) -> list[dict]:
    """Images/s of whole training steps fed by the real loader (decoded images in memory) per worker count."""
    import torch

    from slimcv.data import make_loader
    from slimcv.engine import speed as S
    from slimcv.engine.loop import SupervisedLoss, train_one_epoch

    name, kwargs, ds, size, batch, opt = MODELS[key]
    rows = []
    setting = S.candidates(torch.device("cpu"))[-1]
    for cache in (False, True):
        data = _data(ds, data_root, batch, size, cache=cache)
        sub = torch.utils.data.Subset(data.train, list(range(batches * batch)))
        for workers in choices:
            model, o, sch = _fresh(name, kwargs, data.num_classes, setting, opt, batches)
            loader = make_loader(sub, batch, train=True, workers=workers, seed=0, ignore_index=data.info.ignore_index)
            t = time.perf_counter()
            train_one_epoch(model, SupervisedLoss(data.info.ignore_index), loader, o, sch, torch.device("cpu"),
                            amp=setting.amp, channels_last=setting.channels_last)
            rate = batches * batch / (time.perf_counter() - t)
            rows.append({"model": key, "in_memory": cache, "workers": workers, "setting": setting.label,
                         "threads": torch.get_num_threads(), "images_per_s": rate})
            print(f"  {key} {'memory' if cache else 'disk'} threads {torch.get_num_threads()} workers {workers}: "
                  f"{rate:.1f} img/s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke test of the script)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_speed.json"))
    args = p.parse_args()
    import torch

    from slimcv._console import print_table
    from slimcv.hardware import cpu_features

    torch.set_num_threads(1)
    data_root = Path(args.data)
    steps = {"camvid_teacher": 3, "camvid_student": 6, "cifar_resnet20": 4}
    if args.quick:
        steps = {k: 1 for k in steps}
    out: dict = {"cpu": cpu_features(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": 1,
                 "steps": [], "data": [], "threads_rows": [], "workers": []}
    for key in args.models:
        print(f"{key}: steps", flush=True)
        out["steps"].append(measure_steps(key, data_root, 1 if args.quick else args.rounds, steps[key]))
        out["data"].append(measure_data(key, data_root, 8 if args.quick else 40))
    key = args.models[0]
    print(f"{key}: threads", flush=True)
    out["threads_rows"] = measure_threads(key, data_root, steps[key])
    for wkey in [k for k in ("camvid_teacher", "camvid_student") if k in args.models] or args.models[:1]:
        print(f"{wkey}: loader workers", flush=True)
        for threads in sorted({1, _cores()}):
            out["workers"] += _in_child("workers", wkey, threads, 4 if args.quick else 12, data_root)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    flags = ", ".join(out["cpu"].get("flags", []))
    rows = []
    for r in out["steps"]:
        for label, rate in r["images_per_s"].items():
            chosen = " (probe)" if label == f"slimcv {r['probe_choice']}" else ""
            rows.append((r["model"], label + chosen, rate, r["speedup_vs_fp32_nchw"][label]))
    print_table(f"Training steps, 1 thread, {out['cpu'].get('model')} [{flags}]", ["model", "loop", "img/s",
                "x fp32 NCHW"], rows)
    print_table("Data per image (ms)", ["model", "decode", "decode+augment", "augment from memory"],
                [(d["model"], d["decode_ms"], d["decode_augment_ms"], d["augment_from_memory_ms"])
                 for d in out["data"]])
    print_table("Threads", ["model", "neighbour", "threads", "OMP_WAIT_POLICY", "img/s"],
                [(r["model"], r["neighbour"], r["threads"], r["omp_wait_policy"], r["images_per_s"])
                 for r in out["threads_rows"]])
    print_table("Loader workers (whole steps, fastest setting)", ["model", "images", "threads", "workers", "img/s"],
                [(r["model"], "memory" if r["in_memory"] else "disk", r["threads"], r["workers"], r["images_per_s"])
                 for r in out["workers"]])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
