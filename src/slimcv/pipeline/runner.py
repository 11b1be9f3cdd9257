"""``slimcv run RECIPE``: execute a recipe's stages in order, skipping finished ones, resuming interrupted ones."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from slimcv._console import console, print_table
from slimcv._io import atomic_write_text
from slimcv.errors import SlimcvError, close_matches
from slimcv.pipeline.manifest import (hash_outputs, outputs_intact, read_manifest, resolved_params, sha256_file,
                                      stage_digest, write_manifest)
from slimcv.pipeline.recipe import Recipe, load_recipe
from slimcv.pipeline.spec import Resolver, StageSpec
from slimcv.pipeline.stages import STAGE_TYPES, StageOutput
from slimcv.run_folder import CONFIG_JSON, RECIPE_HEADER, RECIPE_YAML


@dataclass
class StageRecord:
    """One stage of a run: what happened to it (ran, resumed, skipped), its folder, metrics and wall time."""

    name: str
    type: str
    status: str
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0


@dataclass
class RunResult:
    """The run folder and one record per stage, in order."""

    run_dir: Path
    stages: list[StageRecord]
    recipe: Recipe

    def __getitem__(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(name)

    @property
    def report(self) -> Path | None:
        """The HTML report of the last report stage, if the recipe has one."""
        for record in reversed(self.stages):
            if record.type == "report" and record.metrics.get("html"):
                return Path(record.metrics["html"])
        return None


def run(recipe: str | Path | dict[str, Any] | Recipe, overrides: Sequence[str] = (), *,
        out_dir: str | Path | None = None, until: str | None = None, dry_run: bool = False) -> RunResult:
    """Validate ``recipe`` (path, dict or Recipe; ``overrides`` like ``distill.epochs=5``), then run its stages."""
    rec = load_recipe(recipe, overrides, out_dir)
    ctx = RunContext(rec)
    stages = _plan(rec, until)
    if dry_run:
        return _dry_run(ctx, stages)
    ctx.preflight(stages)
    ctx.root.mkdir(parents=True, exist_ok=True)
    with run_lock(ctx.root):
        _record_recipe(ctx.root, rec)
        console.print(f"slimcv run: {rec.source} -> {ctx.root} ({len(stages)} of {len(rec.stages)} stages)")
        records = [run_stage(ctx, spec, i, len(stages)) for i, spec in enumerate(stages, 1)]
    result = RunResult(ctx.root, records, rec)
    print_run_summary(result)
    return result


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` while a run writes there, so two runs of one recipe cannot interleave their stages.
    A lock left by a process that died on this machine is taken over."""
    lock = Path(root) / ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                lock.unlink(missing_ok=True)  # its run died without cleaning up
                continue
            raise SlimcvError(f"Another slimcv run (pid {owner.get('pid', '?')} on {owner.get('host', '?')}) is "
                              f"writing {root}; wait for it to finish, or delete {lock} if that run is gone.") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunContext:
    """Shared state of one run: the recipe, loaded datasets, and the digests of finished stages."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.resolver = Resolver(recipe.config, list(recipe.stages))
        self.root = recipe.out_dir
        self.digests: dict[str, str] = {}
        self._data: dict[str, Any] = {}

    def folder(self, name: str) -> Path:
        return self.resolver.folder(name)

    def data(self, spec: StageSpec):
        """The DataBundle a stage trains/evaluates on (built once per distinct data setting)."""
        from slimcv.data import load_data

        values = self.resolver.data(spec)
        key = json.dumps(values, sort_keys=True)
        if key not in self._data:
            self._data[key] = load_data(values)
        return self._data[key]

    def inputs(self, spec: StageSpec) -> dict[str, str]:
        """Digest of everything a stage consumes: earlier stages' outputs, trained runs, weights files."""
        out: dict[str, str] = {}
        stages = {s.name for s in self.recipe.stages}
        for key, value in spec.refs.items():
            for ref in value if isinstance(value, list) else [value]:
                # a stage's digest exists once it has run or been skipped (KeyError: not yet, in a dry run)
                out[f"{key}:{ref}"] = self.digests[ref] if ref in stages else self._model_digest(ref)
        model = spec.params.get("model")
        entry = self.recipe.config.models.get(model) if isinstance(model, str) else None
        if entry is not None and entry.weights:
            out[f"weights:{model}"] = sha256_file(entry.weights)
        return out

    def _model_digest(self, ref: str) -> str:
        entry = self.recipe.config.models[ref]
        if entry.run:
            from slimcv.artifact import find_weights

            return sha256_file(find_weights(entry.run))
        return sha256_file(entry.weights)

    def preflight(self, stages: list[StageSpec]) -> None:
        """Everything that can fail before training: data paths, tasks of models vs data, trained runs, the
        output folder; every problem found is reported at once."""
        problems = self.problems(stages)
        if problems:
            raise SlimcvError(" ".join(p if p.endswith(".") else p + "." for p in problems))

    def problems(self, stages: list[StageSpec]) -> list[str]:
        from slimcv.artifact import read_model_spec
        from slimcv.engine.train import check_task

        problems: list[str] = []

        def attempt(fn, *args) -> Any:
            try:
                return fn(*args)
            except SlimcvError as e:
                if str(e) not in problems:
                    problems.append(str(e))
                return None

        for name, entry in self.recipe.config.models.items():
            if entry.run:
                attempt(read_model_spec, entry.run)
            if entry.weights and not Path(entry.weights).is_file():
                problems.append(f"{self.recipe.source}: models.{name}.weights: {entry.weights} does not exist.")
        attempt(check_writable, self.root)
        for spec in stages:
            folder = self.folder(spec.name)
            attempt(check_stage_folder, folder, read_manifest(folder))
            bundle = attempt(self.data, spec)
            if bundle is not None and spec.type in ("train", "distill"):
                attempt(check_task, spec.config.model, bundle)
        return problems


def _record_recipe(root: Path, rec: Recipe) -> None:
    """``recipe.yaml`` in the run folder: the recipe as run. Never over the file the user ran (a run folder's own
    recipe, run again to resume) nor over a recipe.yaml that slimcv did not write there."""
    target = root / RECIPE_YAML
    if Path(rec.source).is_file() and Path(rec.source).resolve() == target.resolve():
        return
    if target.exists() and not target.read_text(errors="replace").startswith(RECIPE_HEADER):
        console.print(f"[yellow]{target} is not slimcv's record of a run, so it is left as it is.[/]")
        return
    atomic_write_text(target, RECIPE_HEADER + yaml.safe_dump(rec.raw, sort_keys=False))


def check_writable(root: Path) -> None:
    """The run folder can be created and written: its first existing parent is a writable folder, and it is a
    folder of its own (not the filesystem root or the home folder, where stage folders would mix with others)."""
    where = Path(root).expanduser().absolute()
    if where == Path(where.anchor) or where == Path.home():
        raise SlimcvError(f"out_dir {root} is {'the filesystem root' if where == Path(where.anchor) else 'your home folder'}"
                          "; a run writes a folder per stage there: give it a folder of its own, e.g. runs/NAME.")
    probe = Path(root).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SlimcvError(f"Cannot write the run folder {root}: {probe} is a file; choose another --out-dir.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SlimcvError(f"Cannot write the run folder {root}: {probe} is not writable; choose another --out-dir.")


def _plan(rec: Recipe, until: str | None) -> list[StageSpec]:
    names = [s.name for s in rec.stages]
    if until is None:
        return list(rec.stages)
    if until not in names:
        raise SlimcvError(f"--until {until!r} is not a stage of {rec.source}; its stages are {', '.join(names)}."
                          f"{close_matches(until, names)}")
    return list(rec.stages[: names.index(until) + 1])


def run_stage(ctx: RunContext, spec: StageSpec, index: int, total: int) -> StageRecord:
    """Skip, resume or (re)run one stage, with its manifest written before and after."""
    stype = STAGE_TYPES[spec.type]
    folder = ctx.folder(spec.name)
    params = resolved_params(spec.config, _folders(ctx))
    fingerprint = _fingerprint(spec, params)
    inputs = ctx.inputs(spec)
    old = read_manifest(folder)
    action = decide(old, fingerprint, inputs, folder, stype.resumable)
    console.rule(f"[{index}/{total}] {spec.name} ({spec.type}): {action}")
    if action == "skip":
        ctx.digests[spec.name] = old["digest"]
        return StageRecord(spec.name, spec.type, "skipped", folder, old.get("metrics", {}), old.get("wall_time_s", 0))
    if action == "run" and folder.exists():
        check_stage_folder(folder, old)
        shutil.rmtree(folder)
    attempts = (old or {}).get("attempts", 0) + 1 if action == "resume" else 1
    started = (old or {}).get("started") if action == "resume" else _now()
    manifest = {"stage": spec.name, "type": spec.type, "status": "running", "fingerprint": fingerprint,
                "inputs": inputs, "params": params, "attempts": attempts, "started": started}
    write_manifest(folder, manifest)
    t0 = time.perf_counter()
    out: StageOutput = stype.run(spec, ctx)
    wall = time.perf_counter() - t0
    metrics = {**out.metrics, **_model_stats(out, ctx, spec)}
    outputs = hash_outputs(folder, out.artifacts)
    if not outputs:
        raise SlimcvError(f"Stage {spec.name!r} finished without writing {out.artifacts} in {folder}; "
                          "this is a bug in the stage, please report it.")
    digest = stage_digest(fingerprint, outputs)
    write_manifest(folder, {**manifest, "status": "done", "outputs": outputs, "digest": digest, "metrics": metrics,
                            "wall_time_s": wall, "finished": _now()})
    ctx.digests[spec.name] = digest
    return StageRecord(spec.name, spec.type, "resumed" if action == "resume" else "ran", folder, metrics, wall)


def check_stage_folder(folder: Path, manifest: dict[str, Any] | None) -> None:
    """Refuse a stage folder that holds files but no manifest of slimcv's: the user's files are never deleted."""
    if manifest is not None or not folder.exists():
        return
    if folder.is_file():
        raise SlimcvError(f"Stage folder {folder} is a file; move it away or choose another --out-dir.")
    if any(folder.iterdir()):
        raise SlimcvError(f"{folder} already holds files that slimcv run did not write (it has no manifest.json), "
                          "so it will not be replaced; move it away or choose another --out-dir.")


def decide(old: dict[str, Any] | None, fingerprint: str, inputs: dict[str, str], folder: Path,
           resumable: bool) -> str:
    """'skip' (done, unchanged, outputs intact), 'resume' (interrupted, unchanged) or 'run' (from scratch)."""
    if not old:
        return "run"
    same = old.get("fingerprint") == fingerprint and old.get("inputs") == inputs
    if same and old.get("status") == "done" and old.get("digest") and outputs_intact(folder, old):
        return "skip"
    if same and old.get("status") == "running" and resumable:
        return "resume"
    return "run"


def _fingerprint(spec: StageSpec, params: dict[str, Any]) -> str:
    from slimcv.pipeline.manifest import sha256_json

    return sha256_json({"type": spec.type, "params": params})


def _folders(ctx: RunContext) -> dict[str, str]:
    names = [s.name for s in ctx.recipe.stages] + list(ctx.recipe.config.models)
    return {str(ctx.folder(n)): f"@{n}" for n in names}


def _model_stats(out: StageOutput, ctx: RunContext, spec: StageSpec) -> dict[str, Any]:
    if out.model_dir is None:
        return {}
    from slimcv.bench.macs import count_macs, count_params
    from slimcv.artifact import find_weights, load_run_model

    model, _ = load_run_model(out.model_dir)
    image = ctx.data(spec).val[0][0]
    return {"params": count_params(model), "macs": count_macs(model, (1, *image.shape)),
            "weights_bytes": find_weights(out.model_dir).stat().st_size}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dry_run(ctx: RunContext, stages: list[StageSpec]) -> RunResult:
    """Say what a run would do without running anything (inputs of not-yet-run stages count as changed)."""
    records, problems = [], []
    for spec in stages:
        folder = ctx.folder(spec.name)
        old = read_manifest(folder)
        params = resolved_params(spec.config, _folders(ctx))
        try:
            inputs = ctx.inputs(spec)
        except (KeyError, OSError, SlimcvError):
            inputs = {}
        action = decide(old, _fingerprint(spec, params), inputs, folder, STAGE_TYPES[spec.type].resumable)
        if action == "skip":
            ctx.digests[spec.name] = old["digest"]
        try:
            check_stage_folder(folder, old)
            status = f"would {action}"
        except SlimcvError as e:
            problems.append(str(e))
            status = "refused: not slimcv's"
        records.append(StageRecord(spec.name, spec.type, status, folder, (old or {}).get("metrics", {})))
    result = RunResult(ctx.root, records, ctx.recipe)
    print_run_summary(result, title=f"plan for {ctx.root}")
    for code in _factories(ctx.recipe):
        console.print(f"will import your code: {code}")
    problems += [p for p in ctx.problems(stages) if p not in problems]
    if problems:
        raise SlimcvError(" ".join(p if p.endswith(".") else p + "." for p in problems))
    return result


def _factories(rec: Recipe) -> list[str]:
    """The package.module:factory models a recipe names: running it imports that code."""
    from slimcv.artifact import is_factory

    names = [e.model for e in rec.config.models.values() if e.model]
    names += [s.params.get("model") for s in rec.stages if isinstance(s.params.get("model"), str)]
    return sorted({n for n in names if n and is_factory(n)})


def print_run_summary(result: RunResult, title: str | None = None) -> None:
    """One row per stage: status, key metric, size, MACs and wall time."""
    rows = []
    for r in result.stages:
        m = r.metrics
        key = next((k for k in ("miou", "top1") if k in m), None)
        rows.append((r.name, r.type, r.status, m.get(key) if key else None, key or "",
                     m["params"] / 1e6 if "params" in m else None, m["macs"] / 1e6 if "macs" in m else None,
                     r.wall_time_s or None))
    print_table(title or f"run {result.run_dir}", ["stage", "type", "status", "metric", "", "params (M)", "MMACs",
                                                   "time (s)"], rows)
    if not (title or "").startswith("plan"):
        for statement in _distillation_verdict(result):
            print(statement.text if statement.good else f"WARNING: {statement.text}")
    if result.report is not None:
        print(f"report: {result.report}")


def _distillation_verdict(result: RunResult) -> list:
    """Whether each distilled student beat the same student trained alone in this run (said plainly when not)."""
    folders = [r.folder for r in result.stages if r.type in ("train", "distill") and r.folder is not None
               and (Path(r.folder) / CONFIG_JSON).is_file()]
    if not any(r.type == "distill" for r in result.stages) or len(folders) < 2:
        return []
    from slimcv.report.collect import collect
    from slimcv.report.verdict import distillation_statements

    try:
        return distillation_statements(collect(folders, count=False))
    except SlimcvError:
        return []
