"""What a ``TrainConfig`` builds: the model and what it trains, the optimizer groups, the lr schedule.

Thin adapters from config keys onto the model's own API (``models.assembly.assemble_model``,
``CambrianForCausalLM.set_trainable`` / ``param_groups``), so config errors name their keys.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from cambrian.train.config import TrainConfig
from cambrian.utils.config import ConfigError


def build_model(cfg: TrainConfig):
    """(model, processor) from a saved model, or a preset with optional pretrained LLM / tower / connector weights."""
    from cambrian.models.assembly import AssemblyError, assemble_model

    m = cfg.model
    try:
        return assemble_model(
            m.preset, path=m.path, llm_path=m.llm_path, tower_paths=m.tower_paths,
            connector_path=m.connector_path, tokenizer_path=m.tokenizer_path,
            config_overrides=m.config_overrides,
        )  # fmt: skip
    except AssemblyError as e:
        raise ConfigError(f"model.{e.arg}: {e}") from None


def set_trainable(model: nn.Module, cfg: TrainConfig) -> dict[str, bool]:
    """Freeze/unfreeze by part for ``cfg``'s stage and ``model.freeze_*`` keys; returns {part: trainable}."""
    m = cfg.model
    return model.set_trainable(
        cfg.stage, freeze_towers=m.freeze_towers, freeze_llm=m.freeze_llm, freeze_connector=m.freeze_connector
    )


def group_lrs(cfg: TrainConfig, scale: float) -> dict[str, float]:
    """Learning rate of each part (``TrainConfig.lr_keys`` names the keys), times the batch ``scale``."""
    o = cfg.optim
    connector = o.lr if o.connector_lr is None else o.connector_lr
    return {
        "llm": o.lr * scale,
        "towers": (o.lr if o.tower_lr is None else o.tower_lr) * scale,
        "connector": connector * scale,
        "sva": (connector if o.sva_lr is None else o.sva_lr) * scale,
    }


def param_groups(model: nn.Module, lrs: dict[str, float], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of ``model``'s trainable parameters (``CambrianForCausalLM.param_groups``)."""
    return model.param_groups(lrs, weight_decay)


def lr_lambda(total: int, warmup: int, schedule: str, min_ratio: float):
    """LambdaLR factor of step ``step``: linear warmup, then cosine / linear decay to ``min_ratio`` or constant."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup  # the first step already trains (HF warms up from 0)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_ratio + (1 - min_ratio) * max(0.0, decay)

    return f
