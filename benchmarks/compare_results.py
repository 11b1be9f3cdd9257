"""Compare a chain results JSON with the previous one and flag regressions beyond a tolerance.

    python benchmarks/compare_results.py benchmarks/results/camvid_chain.json            # vs the committed version
    python benchmarks/compare_results.py OLD.json NEW.json --metric-tol 0.5 --latency-tol 0.15

Per model: accuracy (mIoU / top-1) lower by more than --metric-tol points, latency (each runtime) higher by more
than --latency-tol (a fraction), or params / MACs / file size larger by more than --size-tol is a regression; a
model or runtime that disappeared is one too. Exit status 1 when anything regressed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Change:
    """One compared figure of one model."""

    model: str
    field: str
    old: float | None
    new: float | None
    regressed: bool
    note: str = ""


def compare(old: dict[str, Any], new: dict[str, Any], metric_tol: float = 0.5, latency_tol: float = 0.15,
            size_tol: float = 0.01) -> list[Change]:
    """Every model's accuracy, latency per runtime, params, MACs and file size, old vs new, regressions flagged."""
    key = new.get("metric") or old.get("metric")
    out: list[Change] = []
    for name, before in old.get("models", {}).items():
        after = new.get("models", {}).get(name)
        if after is None:
            out.append(Change(name, "model", None, None, True, "missing from the new results"))
            continue
        out.append(_lower_is_worse(name, key, before.get(key), after.get(key), metric_tol))
        for runtime, ms in before.get("latency_ms", {}).items():
            now = after.get("latency_ms", {}).get(runtime)
            if now is None:
                out.append(Change(name, f"latency {runtime}", ms, None, True, "runtime not timed any more"))
            else:
                out.append(Change(name, f"latency {runtime}", ms, now, now > ms * (1 + latency_tol)))
        for field in ("params", "macs", "file_bytes"):
            a, b = before.get(field), after.get(field)
            if a is not None and b is not None:
                out.append(Change(name, field, a, b, b > a * (1 + size_tol)))
    return out


def _lower_is_worse(model: str, field: str, old: float | None, new: float | None, tol: float) -> Change:
    if old is None:
        return Change(model, field, old, new, False, "no previous value")
    if new is None:
        return Change(model, field, old, new, True, "no value in the new results")
    return Change(model, field, old, new, new < old - tol)


def print_comparison(changes: list[Change], title: str = "comparison") -> None:
    """A table of the changes, regressions first, and a one-line verdict."""
    from slimcv._console import print_table

    rows = [(c.model, c.field, c.old, c.new, _delta(c), "REGRESSED" if c.regressed else "ok", c.note)
            for c in sorted(changes, key=lambda c: not c.regressed)]
    print_table(title, ["model", "figure", "old", "new", "change", "", "note"], rows)
    bad = sum(c.regressed for c in changes)
    print(f"{bad} regression(s) in {len(changes)} compared figures" if bad else
          f"no regressions in {len(changes)} compared figures")


def _delta(c: Change) -> str:
    if c.old is None or c.new is None:
        return "-"
    if c.field.startswith("latency") or c.field in ("params", "macs", "file_bytes"):
        return f"{(c.new / c.old - 1) * 100:+.1f}%" if c.old else "-"
    return f"{c.new - c.old:+.2f}"


def previous_from_git(path: Path) -> dict[str, Any] | None:
    """The committed (HEAD) version of ``path``, or None when it is not in git."""
    path = Path(path).resolve()
    try:
        root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
        rel = path.relative_to(Path(root).resolve())
        text = subprocess.run(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=root, capture_output=True, text=True,
                              check=True).stdout
    except (subprocess.CalledProcessError, ValueError, OSError):
        return None
    return json.loads(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare OLD and NEW (or NEW with its committed version); 1 when anything regressed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, metavar="OLD NEW | NEW")
    p.add_argument("--metric-tol", type=float, default=0.5, help="accuracy points a model may lose (default 0.5)")
    p.add_argument("--latency-tol", type=float, default=0.15, help="fraction latency may grow (default 0.15)")
    p.add_argument("--size-tol", type=float, default=0.01, help="fraction params/MACs/size may grow (default 0.01)")
    p.add_argument("--json", type=Path, help="also write the changes here")
    args = p.parse_args(argv)
    if len(args.files) > 2:
        p.error("give OLD NEW, or only NEW to compare with its committed version")
    new = json.loads(args.files[-1].read_text())
    if len(args.files) == 2:
        old = json.loads(args.files[0].read_text())
    else:
        old = previous_from_git(args.files[0])
        if old is None:
            print(f"{args.files[0]} has no committed version to compare with; give OLD NEW.", file=sys.stderr)
            return 2
    changes = compare(old, new, args.metric_tol, args.latency_tol, args.size_tol)
    print_comparison(changes, f"{args.files[0].name}: previous vs new")
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in changes], indent=2) + "\n")
    return 1 if any(c.regressed for c in changes) else 0


if __name__ == "__main__":
    sys.exit(main())
