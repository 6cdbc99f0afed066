"""Named model presets: the released Cambrian-1 hyper-parameters and tiny variants for tests and demos.

``PRESETS.get(id)()`` returns a ``CambrianConfig``. The released presets describe the published
architectures exactly (docs/checkpoint-format.md 1 and 5), so building one on the ``meta`` device
reproduces the published parameter counts; the ``tiny`` presets build in milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.registry import Registry

PRESETS: Registry[Callable[[], CambrianConfig]] = Registry("model preset")

RELEASED_TOWER_NAMES = [
    "siglip/CLIP-ViT-SO400M-14-384",
    "openai/clip-vit-large-patch14-336",
    "facebook/dinov2-giant-res378",
    "clip-convnext-XXL-multi-stage",
]
RELEASED_TOKEN_LENS = [576, 576, 576, 9216]

_LLAMA3_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    vocab_size=128256,
    bos_token_id=128000,
    eos_token_id=[128001, 128009],
    tie_word_embeddings=False,
)
_VICUNA_13B = dict(
    model_type="llama",
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=40,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    vocab_size=32000,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)
_YI_34B = dict(
    model_type="llama",
    hidden_size=7168,
    intermediate_size=20480,
    num_hidden_layers=60,
    num_attention_heads=56,
    num_key_value_heads=8,
    max_position_embeddings=4096,
    rope_theta=5000000.0,
    rms_norm_eps=1e-5,
    vocab_size=64000,
    bos_token_id=1,
    eos_token_id=7,
    pad_token_id=0,
    tie_word_embeddings=False,
)
_PHI3_MINI = dict(
    model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rope_theta=10000.0,
    rms_norm_eps=1e-5, vocab_size=32064, bos_token_id=1, eos_token_id=32007, pad_token_id=32000,
    sliding_window=2047, tie_word_embeddings=False,
)  # fmt: skip


def _released(
    text: dict[str, Any], num: int, stride: int, conv_mode: str, image_position: int
) -> CambrianConfig:
    from cambrian.models.vision import released_tower_config

    towers = [released_tower_config(n, t) for n, t in zip(RELEASED_TOWER_NAMES, RELEASED_TOKEN_LENS)]
    return CambrianConfig(
        text_config=dict(text),
        vision_towers=[t.to_dict() for t in towers],
        mm_projector_type="sva",
        vision_hidden_size=1024,
        image_token_len=576,
        num_query_group=1,
        query_num_list=[576],
        connector_depth=3,
        sva_num_heads=16,
        num_of_vision_sampler_layers=num,
        start_of_vision_sampler_layers=0,
        stride_of_vision_sampler_layers=stride,
        conv_mode=conv_mode,
        released_image_position=image_position,
    )


PRESETS.register("cambrian-8b", lambda: _released(_LLAMA3_8B, 10, 3, "llama_3", 91))
PRESETS.register("cambrian-13b", lambda: _released(_VICUNA_13B, 10, 4, "vicuna_v1", 35))
PRESETS.register("cambrian-34b", lambda: _released(_YI_34B, 9, 7, "chatml_direct", 87))
# phi3-3b: K = 10 follows from the published size; start/stride are not published (3 assumed, as 8B).
PRESETS.register("cambrian-phi3-3b", lambda: _released(_PHI3_MINI, 10, 3, "phi3", 13))

# ---------------------------------------------------------------------------------------------- tiny
TINY_VOCAB = 512  # matches cambrian.quickstart.tiny_tokenizer.build_tiny_tokenizer()
_TINY_TEXT = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    "phi3": dict(model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024),
    "mistral": dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    # Gemma's default head_dim (256) does not follow hidden_size / heads; no preset id (tiny_config("gemma")).
    "gemma": dict(model_type="gemma", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024),
}  # fmt: skip


def tiny_config(llm: str = "llama", connector: str = "sva", **overrides: Any) -> CambrianConfig:
    """A tiny randomly-initialisable Cambrian: four tiny towers (one per family), S=4 query grid."""
    from cambrian.models.vision import tiny_tower_config

    text = dict(
        _TINY_TEXT[llm],
        vocab_size=TINY_VOCAB,
        tie_word_embeddings=False,
        pad_token_id=2,
        bos_token_id=0,
        eos_token_id=1,
    )
    towers = [
        tiny_tower_config("siglip", token_len=16),
        tiny_tower_config("clip", token_len=16),
        tiny_tower_config("dinov2", token_len=16),
        tiny_tower_config("convnext", token_len=64),  # 8x8 grid: 2x2 windows per query, with position embeds
    ]
    kwargs: dict[str, Any] = dict(
        text_config=text,
        vision_towers=[t.to_dict() for t in towers],
        mm_projector_type=connector,
        vision_hidden_size=32,
        image_token_len=16,
        num_query_group=1,
        query_num_list=[16],
        connector_depth=2,
        sva_num_heads=4,
        num_of_vision_sampler_layers=2,
        start_of_vision_sampler_layers=0,
        stride_of_vision_sampler_layers=2,
        conv_mode="llama_3",
    )
    if connector == "mlp2x_gelu":
        kwargs.update(image_newline=False, unpad=False)
    kwargs.update(overrides)
    return CambrianConfig(**kwargs)


PRESETS.register("tiny", lambda: tiny_config("llama"))
PRESETS.register("tiny-qwen2", lambda: tiny_config("qwen2"))
PRESETS.register("tiny-phi3", lambda: tiny_config("phi3"))
PRESETS.register("tiny-mistral", lambda: tiny_config("mistral"))
PRESETS.register("tiny-mlp", lambda: tiny_config("llama", connector="mlp2x_gelu"))


def preset_config(name: str, **overrides: Any) -> CambrianConfig:
    """The config of preset ``name`` with top-level keys overridden."""
    config = PRESETS.get(name)()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"preset {name!r} has no config key {key!r}")
        setattr(config, key, value)
    config.validate()
    return config
