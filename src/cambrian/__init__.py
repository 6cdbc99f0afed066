"""cambrian: Cambrian-1 multimodal LLMs (several vision towers + Spatial Vision Aggregator + any LLM).

Public API:
    CambrianConfig, CambrianForCausalLM, CambrianProcessor   (registered with the Auto classes)
    PRESETS, build_tiny                                        named model presets
"""

from __future__ import annotations

from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.models.modeling_cambrian import CambrianForCausalLM
from cambrian.models.presets import PRESETS, preset_config
from cambrian.models.processing_cambrian import CambrianProcessor


def _register_auto() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register("cambrian", CambrianConfig, exist_ok=True)
    AutoModelForCausalLM.register(CambrianConfig, CambrianForCausalLM, exist_ok=True)


_register_auto()


def build_tiny(preset: str = "tiny", seed: int = 0) -> tuple[CambrianForCausalLM, CambrianProcessor]:
    """A tiny randomly initialised model and its processor (tiny in-process tokenizer); no I/O."""
    import torch

    from cambrian.data.tiny_tokenizer import build_tiny_tokenizer

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
