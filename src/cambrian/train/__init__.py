"""Training: configs and presets for both Cambrian stages, the trainer, sampler, checkpoints and metrics."""

from cambrian.train.config import (
    TRAIN_PRESETS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    resolve_config,
)

__all__ = ["TRAIN_PRESETS", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "resolve_config"]
