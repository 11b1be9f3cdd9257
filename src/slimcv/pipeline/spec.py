"""A recipe's parts: its top-level settings, its model entries, its stages, and how stages' references resolve
to folders, data settings and models. Below both the recipe validator and the stage adapters, so neither imports
the other for these."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimcv.config import DataConfig
from slimcv.errors import SlimcvError, close_matches


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ModelEntry(_Config):
    """A model of the recipe: a registered architecture (``model``) or an already trained ``run`` folder."""

    model: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="local weights file to start training from")
    run: str | None = Field(None, description="a trained slimcv run folder used as is")


class RecipeConfig(_Config):
    """The top level of a recipe file."""

    name: str = "recipe"
    task: Literal["segmentation", "classification"] | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    out_dir: str | None = Field(None, description="run directory (default runs/<name>)")
    stages: tuple[dict[str, Any], ...] = Field(..., min_length=1)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a validated recipe: its name, type, references to earlier stages and its own config."""

    name: str
    type: str
    refs: dict[str, Any]
    params: dict[str, Any]
    data: dict[str, Any]
    config: Any = field(default=None, compare=False)


class Resolver:
    """Turns stage and model references into folders, data settings and model entries (nothing is read)."""

    def __init__(self, cfg: RecipeConfig, earlier: list[StageSpec]) -> None:
        self.cfg = cfg
        self.stages = {s.name: s for s in earlier}
        self.root = Path(cfg.out_dir or f"runs/{cfg.name}")

    def folder(self, ref: str) -> Path:
        """A stage's folder under the run directory, or a trained model entry's run folder."""
        entry = None if ref in self.stages else self.cfg.models.get(ref)
        if entry is not None and entry.run:
            return Path(entry.run)
        return self.root / ref

    def data(self, spec: StageSpec) -> dict[str, Any]:
        merged = self.cfg.data.model_dump(mode="json")
        for key, value in spec.data.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return merged

    def model(self, ref: str, where: str) -> ModelEntry:
        entry = self.cfg.models.get(ref)
        if entry is not None:
            return entry
        from slimcv.models import check_model_name

        try:
            check_model_name(ref)
        except SlimcvError:
            known = list(self.cfg.models)
            raise SlimcvError(f"{where} {ref!r} is neither a model of this recipe ({', '.join(known) or 'none'}) "
                              f"nor a registered model name{close_matches(ref, known)}") from None
        return ModelEntry(model=ref)
