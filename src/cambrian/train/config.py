"""Training configuration: typed dataclasses, the released recipes as named presets, YAML + overrides.

One trainer runs both stages; a stage is a set of defaults (what is trainable, learning rates,
warmup). ``resolve_config(yaml_path, overrides)`` merges, in order: the preset named by the YAML's
``preset:`` key (or an override ``preset=...``), the YAML file, then ``key.sub=value`` overrides.
The resolved config is written into every run directory (``config.yaml``).

Released recipes (docs/checkpoint-format.md section 5, Cambrian README):
stage 1 connector alignment: towers and LLM frozen, connector lr 1e-3, SVA parameters (connector and
in-LLM SVA layers, learned queries) 1e-4, warmup 6%, cosine, 1 epoch, max length 2048;
stage 2 instruction tuning: connector + LLM at 4e-5 (2e-5 for 34B), warmup 3%, cosine, starting from
the stage-1 connector; global batch 512 (1024 for 34B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cambrian.registry import Registry
from cambrian.utils.config import ConfigError, from_dict, merge, with_overrides


@dataclass
class DataConfig:
    path: str = ""  # LLaVA/Cambrian .json or .jsonl
    image_root: str | None = (
        None  # image paths in rows are relative to this (default: the data file's folder)
    )
    template: str | None = None  # conversation template; default: the model's conv_mode
    system: str | None = None  # system prompt for rows without their own
    max_length: int | None = 2048
    group_by_modality_length: bool = True  # batches of one modality, similar lengths (LLaVA's sampler)
    num_workers: int = 2
    max_bad_fraction: float = 0.01  # stop when more than this fraction of samples seen so far was skipped
    bad_check_after: int = 100  # ...checked once this many samples were seen (or when every one was bad)
    index_cache_dir: str | None = None  # where the row index goes when the data folder is read-only


@dataclass
class ModelConfig:
    preset: str | None = "tiny"  # architecture from a model preset (random init unless paths below)
    path: str | None = None  # a saved Cambrian model (ours or the released layout): overrides preset
    llm_path: str | None = None  # local HF causal-LM directory whose weights fill the language model
    tower_paths: list[str | None] = field(default_factory=list)  # local weights dir per tower, in order
    connector_path: str | None = None  # stage-1 connector export (connector.safetensors or its run dir)
    tokenizer_path: str | None = None  # default: path, then llm_path, else the tiny in-process tokenizer
    config_overrides: dict[str, Any] = field(default_factory=dict)  # CambrianConfig keys
    freeze_towers: bool = True
    freeze_llm: bool | None = None  # default: frozen in stage 1, trained in stage 2
    freeze_connector: bool = False


@dataclass
class OptimConfig:
    lr: float = 4e-5  # everything trainable outside the groups below
    connector_lr: float | None = None  # connector projectors / newline; default: lr
    sva_lr: float | None = (
        None  # SVA layers (connector and in-LLM) and learned queries; default: connector_lr
    )
    tower_lr: float | None = None  # unfrozen towers; default: lr
    base_global_batch: int | None = None  # the global batch the lrs were tuned at (sqrt scaling)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0


@dataclass
class TrainConfig:
    stage: int = 2
    name: str = "run"
    output_dir: str = "runs"  # the run directory is output_dir/name
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    per_device_batch: int = 4
    grad_accum: int = 1
    global_batch: int | None = None  # when set, grad_accum = global_batch / (per_device_batch * processes)
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: ddp when launched with >1 process
    save_every: int = 500  # optimizer steps between checkpoints (0: only at the end)
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "cambrian"
    progress: bool = True

    def validate(self) -> None:
        """Every value checked in one place (YAML, overrides and Python-built configs all come here);
        a bad value raises ``ConfigError`` naming its key, what is allowed and what was given."""
        if self.stage not in (1, 2):
            raise ConfigError(f"stage: {self.stage} is not one of 1, 2")
        if not self.name or self.name in (".", ".."):
            raise ConfigError(f"name: {self.name!r} is not a run name (the run directory is output_dir/name)")
        for key in ("per_device_batch", "grad_accum", "keep_last", "log_every"):
            _at_least(key, getattr(self, key), 1)
        for key in ("global_batch", "max_steps"):  # null: derived (grad_accum) / from `epochs`
            if getattr(self, key) is not None:
                _at_least(key, getattr(self, key), 1, " (or null)")
        _at_least("save_every", self.save_every, 0, " (0: save only at the end)")
        _at_least("seed", self.seed, 0)
        _positive("epochs", self.epochs)
        d = self.data
        if not d.path:
            raise ConfigError("data.path: no training data given (a .json or .jsonl file)")
        if d.max_length is not None:
            _at_least("data.max_length", d.max_length, 1, " (or null)")
        _at_least("data.num_workers", d.num_workers, 0)
        _at_least("data.bad_check_after", d.bad_check_after, 0)
        if not 0 <= d.max_bad_fraction <= 1:
            raise ConfigError(f"data.max_bad_fraction: must be in [0, 1], got {d.max_bad_fraction}")
        if self.model.preset is None and self.model.path is None:
            raise ConfigError("model: give model.preset or model.path")
        self._validate_optim()

    def _validate_optim(self) -> None:
        o = self.optim
        for key in ("lr", "connector_lr", "sva_lr", "tower_lr"):
            value = getattr(o, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"optim.{key}: must be a finite number >= 0, got {value}")
        # A trainable group at learning rate 0 never changes (and AdamW still spends memory on it): a
        # typo, not a way to freeze it (model.freeze_* does that). Groups that are frozen may have 0.
        keys = self.lr_keys()
        trainable = {
            "llm": not self.llm_frozen,
            "towers": not self.model.freeze_towers,
            "connector": not self.model.freeze_connector,
            "sva": not self.model.freeze_connector,
        }
        freeze = {"llm": "model.freeze_llm", "towers": "model.freeze_towers"}
        for group, key in keys.items():
            if trainable[group] and getattr(o, key.split(".")[1]) == 0:
                raise ConfigError(
                    f"{key}: 0 leaves the trainable {group} parameters unchanged; give a learning rate > 0 "
                    f"(freeze them with {freeze.get(group, 'model.freeze_connector')}=true instead)"
                )
        if o.base_global_batch is not None:
            _at_least("optim.base_global_batch", o.base_global_batch, 1, " (or null)")
        if not (math.isfinite(o.weight_decay) and o.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay: must be >= 0, got {o.weight_decay}")
        _positive("optim.eps", o.eps)
        for k, beta in enumerate(o.betas):
            if not 0 <= beta < 1:
                raise ConfigError(f"optim.betas[{k}]: must be in [0, 1), got {beta}")
        if not 0 <= o.warmup_ratio < 1:  # warmup steps = ceil(ratio * steps) then never exceed the steps
            raise ConfigError(f"optim.warmup_ratio: must be in [0, 1), got {o.warmup_ratio}")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
        if o.max_grad_norm is not None:
            _positive("optim.max_grad_norm", o.max_grad_norm, " (or null: no clipping)")

    def lr_keys(self) -> dict[str, str]:
        """The config key each parameter group's learning rate comes from (``group_lrs`` reads the same)."""
        o = self.optim
        connector = "optim.lr" if o.connector_lr is None else "optim.connector_lr"
        return {
            "llm": "optim.lr",
            "towers": "optim.lr" if o.tower_lr is None else "optim.tower_lr",
            "connector": connector,
            "sva": connector if o.sva_lr is None else "optim.sva_lr",
        }

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def llm_frozen(self) -> bool:
        return self.stage == 1 if self.model.freeze_llm is None else self.model.freeze_llm

    def batch_plan(self, world_size: int) -> tuple[int, int]:
        """(grad_accum, global batch) for ``world_size`` processes."""
        per_step = self.per_device_batch * world_size
        if self.global_batch is None:
            return self.grad_accum, per_step * self.grad_accum
        if self.global_batch % per_step:
            raise ConfigError(
                f"global_batch {self.global_batch} is not a multiple of per_device_batch x processes = "
                f"{self.per_device_batch} x {world_size}"
            )
        return self.global_batch // per_step, self.global_batch

    def lr_scale(self, global_batch: int) -> float:
        """sqrt(bs / base_bs) from the Cambrian README; 1 when no base batch is recorded."""
        base = self.optim.base_global_batch
        return 1.0 if base is None else math.sqrt(global_batch / base)


def _at_least(key: str, value: int, low: int, note: str = "") -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}{note}, got {value}")


def _positive(key: str, value: float, note: str = "") -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}: must be a finite number > 0{note}, got {value}")


# --------------------------------------------------------------------------------------------- presets
TRAIN_PRESETS: Registry[dict[str, Any]] = Registry("training preset")


def _stage1(model: str, batch: int) -> dict[str, Any]:
    return {
        "stage": 1,
        "model": {"preset": model},
        "global_batch": batch,
        "optim": {"lr": 1e-3, "connector_lr": 1e-3, "sva_lr": 1e-4, "warmup_ratio": 0.06,
                  "base_global_batch": batch},
        "data": {"max_length": 2048, "group_by_modality_length": False},
        "save_every": 1000,
    }  # fmt: skip


def _stage2(model: str, batch: int, lr: float) -> dict[str, Any]:
    return {
        "stage": 2,
        "model": {"preset": model},
        "global_batch": batch,
        "optim": {"lr": lr, "warmup_ratio": 0.03, "base_global_batch": batch},
        "data": {"max_length": 2048, "group_by_modality_length": True},
        "save_every": 2000,
        "gradient_checkpointing": True,
    }


for _model, _batch, _lr in (
    ("cambrian-8b", 512, 4e-5),
    ("cambrian-13b", 512, 4e-5),
    ("cambrian-34b", 1024, 2e-5),
):
    TRAIN_PRESETS.register(f"{_model}-stage1", lambda m=_model, b=_batch: _stage1(m, b))
    TRAIN_PRESETS.register(f"{_model}-stage2", lambda m=_model, b=_batch, lr=_lr: _stage2(m, b, lr))

TRAIN_PRESETS.register(
    "tiny-stage1",
    lambda: merge(
        _stage1("tiny", 8),
        {"per_device_batch": 4, "save_every": 50, "data": {"max_length": 512, "num_workers": 0}},
    ),
)
TRAIN_PRESETS.register(
    "tiny-stage2",
    lambda: merge(
        _stage2("tiny", 8, 1e-3),
        {"per_device_batch": 4, "save_every": 50, "gradient_checkpointing": False,
         "data": {"max_length": 512, "num_workers": 0}},
    ),
)  # fmt: skip


def resolve_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Preset <- YAML file <- ``key=value`` overrides, checked into a ``TrainConfig``."""
    data = with_overrides({}, path, overrides)
    preset = data.pop("preset", None)
    if preset is not None:
        data = merge(TRAIN_PRESETS.get(str(preset))(), data)
    cfg = from_dict(TrainConfig, data)
    cfg.validate()
    return cfg
