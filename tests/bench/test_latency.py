import torch
from torch import nn

from slimcv.bench.latency import eager_runner, time_interleaved


def test_twice_the_work_measures_slower():
    small = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1))
    big = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
    x = torch.randn(1, 3, 64, 64)
    t = time_interleaved({"small": eager_runner(small, x), "big": eager_runner(big, x)}, warmup=2, runs=15, threads=1)
    assert t["big"].median_ms > 1.5 * t["small"].median_ms
    assert t["big"].p90_ms >= t["big"].median_ms and t["small"].runs == 15 and t["small"].threads == 1
