"""Engine overhead: slimcv's train_one_epoch vs a minimal hand-written loop, same model, data and run.

    python benchmarks/engine_overhead.py [--model resnet20] [--rounds 5] [--batches 20]

Both loops step the same pre-made batches (so data loading is out of the picture); rounds alternate
between them and the median time per round is compared. Target: overhead <= 5%.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from slimcv.config import OptimConfig, ScheduleConfig
from slimcv.engine.loop import SupervisedLoss, train_one_epoch
from slimcv.engine.optim import build_optimizer, build_scheduler
from slimcv.models import create_model


def hand_loop(model, batches, optimizer, scheduler) -> None:
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_overhead.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    seg = args.model.startswith("unet")
    shape = (args.batch_size, 3, 64, 64) if seg else (args.batch_size, 3, 32, 32)
    batches = [(torch.randn(shape), torch.randint(0, 10, (shape[0], *shape[2:]) if seg else (shape[0],)))
               for _ in range(args.batches)]
    device = torch.device("cpu")
    times: dict[str, list[float]] = {"hand": [], "engine": []}
    objective = SupervisedLoss()
    setups = {}
    for name in times:
        model = create_model(args.model, 10)
        opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.01))
        setups[name] = (model, opt, build_scheduler(opt, ScheduleConfig(), 1000, args.batches))
    hand_loop(setups["hand"][0], batches[:2], *setups["hand"][1:])  # warm-up both
    train_one_epoch(setups["engine"][0], objective, batches[:2], *setups["engine"][1:], device)
    for _ in range(args.rounds):
        for name in ("hand", "engine"):
            model, opt, sched = setups[name]
            t0 = time.perf_counter()
            if name == "hand":
                hand_loop(model, batches, opt, sched)
            else:
                train_one_epoch(model, objective, batches, opt, sched, device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["engine"] / med["hand"]
    out = {"model": args.model, "batch_size": args.batch_size, "batches_per_round": args.batches,
           "rounds": args.rounds, "threads": torch.get_num_threads(), "seconds": times,
           "median_s": med, "engine_over_hand": ratio, "overhead_pct": (ratio - 1) * 100}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'loop':8s} {'median s/round':>15s}")
    for k, v in med.items():
        print(f"{k:8s} {v:15.3f}")
    print(f"engine / hand = {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%, target <= +5%) -> {args.out}")


if __name__ == "__main__":
    main()
