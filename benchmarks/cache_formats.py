"""Offline-KD cache formats on CamVid: disk size, build time and how faithfully each keeps the teacher's maps.

    python benchmarks/cache_formats.py [--teacher runs/bench/camvid_teacher] [--images 64] [--threads 1]

For each storage format (uint8 / fp16 / top-k, full or half the training size) the teacher's maps of the
same training images are built into a fresh cache, read back the way training reads them (``soft_map`` at the
training size) and compared with the teacher's exact float32 probabilities: mean per-pixel KL(exact || stored),
argmax agreement, and the largest probability error. This measures what a format loses from the KD target
itself, without a training run per format (the students' accuracy effect is in docs/benchmarks.md where
measured). Bytes and build time are per image and extrapolated to the 367 CamVid training images.
Results: benchmarks/results/cache_formats.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from slimcv.config import DataConfig
from slimcv.data import load_data, spread
from slimcv.distill.teacher_cache import CacheFormat, build_cache
from slimcv.artifact import load_run_model, run_data_config

HERE = Path(__file__).parent
FORMATS = {"uint8_half": CacheFormat(0.5, "uint8"), "uint8_full": CacheFormat(1.0, "uint8"),
           "fp16_full": CacheFormat(1.0, "fp16"), "fp16_half": CacheFormat(0.5, "fp16"),
           "top3_full": CacheFormat(1.0, "topk", 3), "top3_half": CacheFormat(0.5, "topk", 3)}


class _Some:
    """The chosen training images of a dataset, with the ``load`` build_cache reads."""

    def __init__(self, base, indices: list[int]) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int):
        return self.base.load(self.indices[i])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/bench/camvid_teacher")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "cache_formats.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher, spec = load_run_model(args.teacher)
    teacher.eval()
    data_cfg = DataConfig(**run_data_config(args.teacher))
    data = load_data(data_cfg)
    base = data.train.dataset if hasattr(data.train, "dataset") else data.train
    some = _Some(base, spread(args.images, len(base)))
    size = tuple(data_cfg.size)
    root = Path("runs/bench/cache_formats")
    shutil.rmtree(root, ignore_errors=True)
    # the reference: the teacher's exact float32 probabilities at the training size
    exact = []
    with torch.inference_mode():
        from torchvision.transforms import v2

        pre = v2.Compose([v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True),
                          v2.Normalize(list(data.info.mean), list(data.info.std))])
        for i in range(len(some)):
            exact.append(F.softmax(teacher(pre(some.load(i)[0])[None]).float(), 1)[0])
    results = {"teacher": args.teacher, "images": len(some), "size": list(size), "formats": {}}
    for name, fmt in FORMATS.items():
        start = time.perf_counter()
        cache = build_cache(teacher, some, root, size=size, mean=data.info.mean, std=data.info.std,
                            num_classes=data.num_classes, fmt=fmt, data_id={"bench": name, "n": len(some)})
        build_s = time.perf_counter() - start
        kl, agree, worst = 0.0, 0.0, 0.0
        for i, ref in enumerate(exact):
            got = cache.soft_map(i, size)
            got = got.float() / 255.0 if got.dtype == torch.uint8 else got
            got = got / got.sum(0, keepdim=True).clamp_min(1e-8)
            kl += (ref * (ref.clamp_min(1e-8).log() - got.clamp_min(1e-8).log())).sum(0).mean().item()
            agree += (ref.argmax(0) == got.argmax(0)).float().mean().item()
            worst = max(worst, (ref - got).abs().max().item())
        n = len(exact)
        per_image = cache.meta["bytes"] / n
        results["formats"][name] = {
            "scale": fmt.scale, "dtype": fmt.dtype, "bytes_per_image": per_image,
            "camvid_train_mib": per_image * 367 / 2**20, "build_s_per_image": build_s / n,
            "kl_per_pixel": kl / n, "argmax_agreement_pct": 100 * agree / n, "max_abs_prob_error": worst}
        r = results["formats"][name]
        print(f"{name:11s} {r['camvid_train_mib']:8.1f} MiB  build {r['build_s_per_image'] * 1000:6.0f} ms/img  "
              f"KL {r['kl_per_pixel']:.5f}  argmax {r['argmax_agreement_pct']:6.2f}%  max err "
              f"{r['max_abs_prob_error']:.3f}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
