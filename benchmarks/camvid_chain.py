"""Issue 10: the mission's segmentation chain on CamVid, one command, resumable; writes benchmarks/results/*.json.

    python benchmarks/camvid_chain.py --teacher runs/bench/camvid_teacher   # CPU schedule, reuse the teacher
    python benchmarks/camvid_chain.py                                       # CPU schedule, teacher trained too
    python benchmarks/camvid_chain.py --full                                # GPU schedule (camvid_chain_full.yaml)

Stages (recipes/camvid_chain_cpu.yaml): unet w16 teacher; unet w4 student alone; the student + offline KD (T=1);
that student pruned with KD fine-tuning; that model INT8 (ORT); the teacher pruned directly to 10x fewer MACs;
one interleaved bench (eager / ORT FP32 / ORT INT8, batch 1, 2 threads); the report. Interrupt and re-run the
same command to resume. Headline targets: final student >= 10x fewer MACs and >= 5x lower deployed latency than
the teacher within 2.0 mIoU; KD >= +2.0 mIoU over the student alone.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chain import Target, deployed_latency, deployed_metric, fastest, metric, ratio, run_chain  # noqa: E402

TARGETS = (
    Target("final student: teacher MACs / student MACs", lambda r: ratio(r, "macs", "teacher", "student_kd_pruned"),
           10.0, True, "x"),
    Target("final student: teacher latency / deployed latency (fastest runtime each)",
           lambda r: fastest(r, "teacher") / deployed_latency(r), 5.0, True, "x"),
    Target("final student: mIoU drop vs teacher (deployed model)",
           lambda r: metric(r, "teacher") - deployed_metric(r), 2.0, False, " pt"),
    Target("KD effect: student + KD minus student alone (mIoU)",
           lambda r: metric(r, "student_kd") - metric(r, "student_alone"), 2.0, True, " pt"),
)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the CamVid chain and return its results dict."""
    return run_chain("camvid", __doc__, TARGETS, argv)


if __name__ == "__main__":
    main()
