"""torchrun support: process group set-up, rank helpers, device choice."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> bool:
    """Join the process group torchrun describes in the environment; False when not under torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return True


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process (``obj`` itself when not distributed)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def pick_device(name: str = "auto", threads: int | None = None, reserve: int = 0) -> torch.device:
    """CUDA (this process's local rank) when present, else CPU with ``threads``, else OMP_NUM_THREADS when set,
    else the cores left after ``reserve`` (the loader's workers), shared among the local processes: more threads
    than free cores make OpenMP's threads wait on each other."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(name)
    if device.type == "cpu":
        from slimcv.config import usable_cores

        env = os.environ.get("OMP_NUM_THREADS", "")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
        n = threads or (int(env) if env.isdigit() and int(env) > 0 else
                        max(1, (usable_cores() - reserve * local) // max(local, 1)))
        torch.set_num_threads(n)
    return device
