"""Recipes: one YAML file describing a chain of stages, validated completely before anything runs.

A recipe names its data, its models and an ordered list of stages::

    name: shapes
    data: {spec: synthetic-shapes, batch_size: 16}
    models:
      teacher: {model: unet, model_kwargs: {base_width: 8}}
      student: {model: unet, model_kwargs: {base_width: 2}}
    stages:
      - {name: teacher, type: train, model: teacher, epochs: 12}
      - {name: distill, teacher: teacher, model: student, epochs: 10}
      - {name: prune, input: distill, remove: 0.3}

A stage's ``type`` defaults to its name; ``input`` / ``teacher`` name an earlier stage (or a model
entry with a trained ``run`` folder); every other key is a parameter of that stage's own config.
"""
from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from slimcv.config import read_yaml, set_by_path
from slimcv.errors import SlimcvError, close_matches
from slimcv.pipeline.spec import ModelEntry, RecipeConfig, Resolver, StageSpec  # noqa: F401  (Resolver: re-exported)

RUNNER_KEYS = ("name", "type", "input", "teacher", "inputs", "data")
RESERVED = ("cache", "recipe")  # folders of the run directory that are not stages


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: the top-level settings and its stages in order."""

    config: RecipeConfig
    stages: tuple[StageSpec, ...]
    source: str
    raw: dict[str, Any]

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir or f"runs/{self.config.name}")

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise SlimcvError(f"Recipe {self.source} has no stage {name!r}; its stages are "
                          f"{', '.join(s.name for s in self.stages)}.")


def load_recipe(recipe: str | Path | dict[str, Any] | Recipe, overrides: Sequence[str] = (),
                out_dir: str | Path | None = None) -> Recipe:
    """Read (YAML path or dict), apply ``KEY=VALUE`` overrides, and validate every stage; raises SlimcvError."""
    if isinstance(recipe, Recipe) and not overrides and out_dir is None:
        return recipe
    if isinstance(recipe, Recipe):
        source, values = recipe.source, copy.deepcopy(recipe.raw)
    elif isinstance(recipe, dict):
        source, values = "recipe", copy.deepcopy(recipe)
    else:
        source, values = str(recipe), read_yaml(recipe)
    values = normalise_forms(values)
    for item in overrides:
        apply_override(values, item, source)
    if out_dir is not None:
        values["out_dir"] = str(out_dir)
    return validate(values, source)


def normalise_forms(values: Any) -> Any:
    """Accept the natural short forms: ``data: camvid:PATH`` for ``data: {spec: camvid:PATH}``, and a stage
    written ``- distill: {epochs: 5}`` for ``- {type: distill, epochs: 5}``."""
    from slimcv.pipeline.stages import STAGE_TYPES

    if not isinstance(values, dict):
        return values
    values = dict(values)
    if isinstance(values.get("data"), str):
        values["data"] = {"spec": values["data"]}
    stages = values.get("stages")
    if isinstance(stages, list):
        out = []
        for stage in stages:
            if isinstance(stage, dict) and len(stage) == 1:
                (kind, body), = stage.items()
                if kind in STAGE_TYPES and isinstance(body, dict) and "type" not in body:
                    stage = {"type": kind, **body}
            if isinstance(stage, dict) and isinstance(stage.get("data"), str):
                stage = {**stage, "data": {"spec": stage["data"]}}
            out.append(stage)
        values["stages"] = out
    return values


def apply_override(values: dict[str, Any], item: str, source: str = "recipe") -> None:
    """``distill.epochs=5`` sets a key of the stage named distill; ``data.batch_size=4`` a top-level key."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SlimcvError(f"--set {item!r} needs KEY=VALUE, e.g. --set distill.epochs=5.")
    head, _, rest = key.partition(".")
    if head in RecipeConfig.model_fields:
        set_by_path(values, key, value)
        return
    stages = values.get("stages") if isinstance(values.get("stages"), list) else []
    for stage in stages:
        if isinstance(stage, dict) and _stage_name(stage) == head:
            if not rest:
                raise SlimcvError(f"--set {item!r} names a whole stage; set one of its keys, e.g. {head}.epochs=5.")
            set_by_path(stage, rest, value)
            return
    names = [_stage_name(s) for s in stages if isinstance(s, dict)]
    raise SlimcvError(f"--set {item!r}: {head!r} is neither a recipe key ({', '.join(RecipeConfig.model_fields)}) "
                      f"nor a stage of {source} ({', '.join(map(str, names))}).{close_matches(head, names)}")


def _stage_name(stage: dict[str, Any]) -> Any:
    return stage.get("name", stage.get("type"))


def validate(values: dict[str, Any], source: str = "recipe") -> Recipe:
    """Check the whole recipe (keys, types, names, references) and build every stage's config."""
    from slimcv.pipeline.stages import STAGE_TYPES

    values = normalise_forms(values)
    try:
        cfg = RecipeConfig.model_validate(values)
    except ValidationError as e:
        raise SlimcvError(f"{source}: " + "; ".join(_pydantic_problems(e, RecipeConfig)) + ".") from None
    by_model = {name: _model_problems(entry) for name, entry in cfg.models.items()}
    problems = [f"models.{name}{p}" for name, found in by_model.items() for p in found]
    broken = {name for name, found in by_model.items() if found}
    specs: list[StageSpec] = []
    for index, raw in enumerate(cfg.stages):
        spec, stage_problems = _stage(raw, index, specs, cfg, STAGE_TYPES, broken)
        problems += stage_problems
        if spec is not None:
            specs.append(spec)
    problems += _task_problems(cfg, specs)
    if problems:
        many = f" has {len(problems)} problems" if len(problems) > 1 else ""
        raise SlimcvError(f"{source}{many}: " + "; ".join(p.rstrip(".") for p in problems) + ".")
    return Recipe(cfg, tuple(specs), source, copy.deepcopy(values))


def _stage(raw: Any, index: int, earlier: list[StageSpec], cfg: RecipeConfig, types: dict, broken: set[str]):
    """Validate one stage: its name and type, its references, and its own config (built here)."""
    name, kind, problem = _stage_identity(raw, index, earlier, cfg, types)
    if problem:
        return None, [problem]
    where, stype = f"stages.{name}", types[kind]
    refs = {k: raw[k] for k in ("input", "teacher", "inputs") if k in raw}
    if "inputs" in stype.refs and "inputs" not in refs:  # default: every earlier stage that holds a model
        refs["inputs"] = [s.name for s in earlier if types[s.type].makes_model]
    if isinstance(refs.get("inputs"), str):
        refs["inputs"] = [refs["inputs"]]
    problems = [f"{where}.{k}: the {kind} stage takes no {k!r}; remove it" for k in refs if k not in stype.refs]
    problems += [f"{where}.{k}: {p}" for k, v in refs.items() if k in stype.refs
                 for p in _ref_problems(v, earlier, cfg)]
    data = raw.get("data", {})
    if not isinstance(data, dict):
        problems.append(f"{where}.data: give a mapping of data keys to override, e.g. {{batch_size: 4}}")
        data = {}
    params = {k: v for k, v in raw.items() if k not in RUNNER_KEYS}
    problems += [f"{where}.{k}: set by the runner; remove it" for k in stype.managed if k in params]
    problems += [f"{where}.{p}" for p in _name_problems(params)]
    spec = StageSpec(name, kind, refs, params, data)
    model = params.get("model")
    if problems or (isinstance(model, str) and model in broken):  # a broken model entry is reported once
        return spec, problems
    try:
        config = stype.build(spec, Resolver(cfg, earlier))
    except ValidationError as e:
        return spec, [f"{where}.{p}" for p in _pydantic_problems(e, stype.schema_class(), stype.managed)]
    except (SlimcvError, TypeError, ValueError) as e:  # the builders' own checks, and malformed sections
        return spec, [f"{where}: {str(e).rstrip('.')}"]
    return StageSpec(name, kind, refs, params, data, config), []


def _stage_identity(raw: Any, index: int, earlier: list[StageSpec], cfg: RecipeConfig, types: dict):
    """(name, type, problem): a stage needs a unique, folder-safe name and a known type."""
    where = f"stages.{index}"
    if not isinstance(raw, dict):
        return None, None, f"{where}: a stage must be a mapping like {{name: teacher, type: train, ...}}"
    name = raw.get("name", raw.get("type"))
    if not isinstance(name, str) or not name:
        return None, None, f"{where}: give the stage a name (and a type: {', '.join(types)})"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name) or name in RESERVED:
        return None, None, (f"{where}.name: {name!r} must start with a letter and hold only letters, digits, _ and "
                            f"- (and not be {', '.join(RESERVED)})")
    where = f"stages.{name}"
    kind = raw.get("type", name)
    if kind not in types:
        hint = close_matches(str(kind), types)
        return name, kind, f"{where}.type: unknown stage type {kind!r}; allowed: {', '.join(types)}.{hint}"
    if any(s.name == name for s in earlier):
        return name, kind, f"{where}: two stages are named {name!r}; give each stage its own name"
    if name in cfg.models and (cfg.models[name].run or cfg.models[name].weights):
        return name, kind, (f"{where}: {name!r} also names a trained model in models; references would be "
                            "ambiguous, rename one of them")
    return name, kind, None


def _ref_problems(value: Any, earlier: list[StageSpec], cfg: RecipeConfig) -> list[str]:
    names = value if isinstance(value, list) else [value]
    known = [s.name for s in earlier] + [n for n, m in cfg.models.items() if m.run or m.weights]
    out = []
    for ref in names:
        if not isinstance(ref, str) or ref not in known:
            allowed = ", ".join(known) or "none yet"
            out.append(f"{ref!r} is not an earlier stage or a model with a trained run/weights; "
                       f"allowed: {allowed}.{close_matches(str(ref), known)}")
    return out


def _name_problems(params: dict[str, Any]) -> list[str]:
    """Registered names a stage picks (KD losses, pruning importance), checked with their key paths."""
    from slimcv.distill.losses import KD_LOSSES
    from slimcv.prune.structured import IMPORTANCES

    out = []
    for section in ("losses", "distill"):
        specs = params.get(section)
        for i, spec in enumerate(specs if isinstance(specs, list) else []):
            name = spec.get("name") if isinstance(spec, dict) else None
            allowed = KD_LOSSES.names() + (["feature"] if section == "losses" else [])
            if isinstance(name, str) and name not in allowed:
                out.append(f"{section}.{i}.name: unknown KD loss {name!r}; allowed: {', '.join(allowed)}."
                           f"{close_matches(name, allowed)}")
    importance = params.get("importance")
    if isinstance(importance, str) and importance not in IMPORTANCES:
        allowed = IMPORTANCES.names()
        out.append(f"importance: unknown importance {importance!r}; allowed: {', '.join(allowed)}."
                   f"{close_matches(importance, allowed)}")
    return out


def _model_problems(entry: ModelEntry) -> list[str]:
    """Problems of one model entry, each starting with its key path below the entry ('.model: ...')."""
    if (entry.model is None) == (entry.run is None):
        return [": give exactly one of 'model' (an architecture name) or 'run' (a trained run folder)"]
    if entry.model is None:
        return []
    from slimcv.models import MODELS, check_model_name

    try:
        check_model_name(entry.model)
    except SlimcvError as e:
        return [f".model: {str(e).rstrip('.')}"]
    if entry.model not in MODELS:
        return []
    params = inspect.signature(MODELS.get(entry.model)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    allowed = [p for p in params if p != "num_classes"]
    return [f".model_kwargs.{k}: unknown option of {entry.model!r}; allowed: {', '.join(allowed) or 'none'}"
            f".{close_matches(k, allowed)}" for k in entry.model_kwargs if k not in allowed]


def _task_problems(cfg: RecipeConfig, specs: list[StageSpec]) -> list[str]:
    from slimcv.models import model_task

    tasks = {}
    for name, entry in cfg.models.items():
        if entry.model is not None:
            try:
                task = model_task(entry.model)
            except SlimcvError:
                continue
            if task is not None:
                tasks[name] = task
    wanted = cfg.task or (next(iter(tasks.values())) if tasks else None)
    out = [f"models.{n}: {cfg.models[n].model!r} is a {t} model but the recipe is for {wanted}; pick a model "
           f"from `slimcv models --task {wanted}`" for n, t in tasks.items() if t != wanted]
    if wanted == "classification":
        from slimcv.distill.losses import DENSE_ONLY

        for spec in specs:
            losses = getattr(spec.config, "losses", None) or getattr(spec.config, "distill", None) or ()
            out += [f"stages.{spec.name}: loss {ls.name!r} compares pixel maps and works on segmentation only; "
                    "use kd, dkd or dist for classification" for ls in losses if ls.name in DENSE_ONLY]
    return out


def _pydantic_problems(e: ValidationError, schema: type[BaseModel], hidden: Sequence[str] = ()) -> list[str]:
    out = []
    for err in e.errors()[:6]:
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = [k for k in _allowed_keys(schema, loc[:-1]) if not (len(loc) == 1 and k in hidden)]
            hint = close_matches(loc[-1], allowed)
            out.append(f"{key}: unknown key; allowed: {', '.join(allowed)}.{hint}")
        elif err["type"] == "missing":
            out.append(f"{key}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{key}: {msg} (got {err.get('input')!r})")
    return out


def _allowed_keys(schema: type[BaseModel], path: list[str]) -> list[str]:
    """Field names of the (nested) pydantic model at ``path``, for 'unknown key' messages."""
    import typing

    cls: Any = schema
    for part in path:
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                break  # an index into a list/dict of models: keep the model class
            return []
        ann = fields[part].annotation
        candidates = [ann, *typing.get_args(ann)] + [a for arg in typing.get_args(ann) for a in typing.get_args(arg)]
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))
