"""cambrian: Cambrian-1 multimodal LLMs (several vision towers + Spatial Vision Aggregator + any LLM).

Public API:
    CambrianConfig, CambrianForCausalLM, CambrianProcessor   (registered with the Auto classes)
    PRESETS, preset_config, build_tiny                         named model presets

The names load on first use (PEP 562), so ``import cambrian`` and the data commands (``cambrian data
...``) do not pay for torch and transformers; importing ``cambrian.models.modeling_cambrian`` (which any
of the model names does) registers the Auto classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CambrianConfig": "cambrian.models.configuration_cambrian",
    "CambrianForCausalLM": "cambrian.models.modeling_cambrian",
    "CambrianProcessor": "cambrian.models.processing_cambrian",
    "PRESETS": "cambrian.models.presets",
    "preset_config": "cambrian.models.presets",
}

if TYPE_CHECKING:
    from cambrian.models.configuration_cambrian import CambrianConfig
    from cambrian.models.modeling_cambrian import CambrianForCausalLM
    from cambrian.models.presets import PRESETS, preset_config
    from cambrian.models.processing_cambrian import CambrianProcessor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        importlib.import_module("cambrian.models.modeling_cambrian")  # registers the Auto classes
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cambrian' has no attribute {name!r}")


def build_tiny(preset: str = "tiny", seed: int = 0) -> tuple[CambrianForCausalLM, CambrianProcessor]:
    """A tiny randomly initialised model and its processor (tiny in-process tokenizer); no I/O."""
    import torch

    from cambrian.data.tiny_tokenizer import build_tiny_tokenizer
    from cambrian.models.modeling_cambrian import CambrianForCausalLM
    from cambrian.models.presets import preset_config
    from cambrian.models.processing_cambrian import CambrianProcessor

    config = preset_config(preset)
    processor = CambrianProcessor.from_config(config, build_tiny_tokenizer())
    torch.manual_seed(seed)
    model = CambrianForCausalLM(config).eval()
    return model, processor


__all__ = [
    "PRESETS",
    "CambrianConfig",
    "CambrianForCausalLM",
    "CambrianProcessor",
    "build_tiny",
    "preset_config",
]
__version__ = "0.1.0"
