"""`CambrianConfig`: the Hugging Face config of a Cambrian model (towers, connector, any causal LM).

The LLM is described by a nested ``text_config`` (any ``AutoConfig``), the towers by a list of
``TowerConfig`` dicts, and the connector by the keys the released checkpoints use
(docs/checkpoint-format.md section 1), so our own format and the released one share vocabulary.
Validation happens here, at construction, so a bad config fails with a message naming the field
instead of a shape error deep inside the forward pass.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from cambrian.models.vision.config import TowerConfig

CONNECTOR_TYPES = ("sva", "mlp2x_gelu")


def _isqrt_exact(value: int, what: str) -> int:
    side = math.isqrt(int(value))
    if side * side != int(value):
        raise ValueError(f"{what} = {value} is not a perfect square (the image grid is square)")
    return side


class CambrianConfig(PretrainedConfig):
    """Configuration of ``CambrianForCausalLM``.

    Args:
        text_config: config of the language model (dict with ``model_type`` or a ``PretrainedConfig``).
        vision_towers: list of ``TowerConfig`` dicts, in the order the connector sees them. Tower 0
            provides the SVA global context.
        mm_projector_type: connector id, ``"sva"`` or ``"mlp2x_gelu"``.
        vision_hidden_size: V, the width of the SVA (every tower is projected to it).
        image_token_len: L, query-grid size per image before unpadding (a perfect square, side S).
        num_query_group / query_num_list: G query groups with Q_g queries each (perfect squares
            whose side divides every tower grid).
        connector_depth: D, SVA layers in the connector.
        sva_num_heads: attention heads inside each SVA layer (16 in the released models).
        num_of_vision_sampler_layers / start_of_vision_sampler_layers / stride_of_vision_sampler_layers:
            K SVA layers inside the LLM, after decoder layers ``start + k * stride``.
        connector_only: disables the in-LLM SVA layers.
        image_newline: append a learned newline token after each row of image tokens.
        unpad: drop the query rows/columns that only cover pad-to-square padding.
        image_token_id: id of the ``<image>`` placeholder in ``input_ids``.
        conv_mode: conversation template id used by the processor.
    """

    model_type = "cambrian"
    sub_configs = {"text_config": AutoConfig}  # noqa: RUF012 (Hugging Face convention)

    def __init__(
        self,
        text_config: dict[str, Any] | PretrainedConfig | None = None,
        vision_towers: list[dict[str, Any]] | None = None,
        mm_projector_type: str = "sva",
        vision_hidden_size: int = 1024,
        image_token_len: int = 576,
        num_query_group: int = 1,
        query_num_list: list[int] | None = None,
        connector_depth: int = 3,
        sva_num_heads: int = 16,
        num_of_vision_sampler_layers: int = 10,
        start_of_vision_sampler_layers: int = 0,
        stride_of_vision_sampler_layers: int = 3,
        connector_only: bool = False,
        image_newline: bool = True,
        unpad: bool = True,
        image_token_id: int | None = None,
        image_token: str = "<image>",
        conv_mode: str | None = None,
        **kwargs: Any,
    ):
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", None)
            if model_type is None:
                raise ValueError("text_config needs a 'model_type' (e.g. 'llama', 'qwen2', 'phi3')")
            text_config = AutoConfig.for_model(model_type, **text_config)
        self.text_config = text_config
        self.vision_towers = [
            t.to_dict() if isinstance(t, TowerConfig) else dict(t) for t in (vision_towers or [])
        ]
        self.mm_projector_type = mm_projector_type
        self.vision_hidden_size = vision_hidden_size
        self.image_token_len = image_token_len
        self.num_query_group = num_query_group
        self.query_num_list = list(query_num_list) if query_num_list is not None else [image_token_len]
        self.connector_depth = connector_depth
        self.sva_num_heads = sva_num_heads
        self.num_of_vision_sampler_layers = num_of_vision_sampler_layers
        self.start_of_vision_sampler_layers = start_of_vision_sampler_layers
        self.stride_of_vision_sampler_layers = stride_of_vision_sampler_layers
        self.connector_only = connector_only
        self.image_newline = image_newline
        self.unpad = unpad
        self.image_token_id = image_token_id
        self.image_token = image_token
        self.conv_mode = conv_mode
        super().__init__(**kwargs)
        if self.text_config is not None and self.vision_towers:
            self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def tower_configs(self) -> list[TowerConfig]:
        return [TowerConfig.from_dict(t) for t in self.vision_towers]

    @property
    def query_side(self) -> int:
        """S: side of the final image-token grid."""
        return _isqrt_exact(self.image_token_len, "image_token_len")

    @property
    def llm_hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def sva_layer_indices(self) -> list[int]:
        """Decoder layers after which an in-LLM SVA layer runs (empty without in-LLM SVA)."""
        if self.mm_projector_type != "sva" or self.connector_only:
            return []
        return [
            self.start_of_vision_sampler_layers + k * self.stride_of_vision_sampler_layers
            for k in range(self.num_of_vision_sampler_layers)
        ]

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs: Any) -> None:
        """``config.json`` with an ``auto_map`` (``AutoConfig``, ``AutoModelForCausalLM``,
        ``AutoModelForImageTextToText``, ``AutoProcessor``) and the small modules it names, so
        ``trust_remote_code`` loaders find the installed classes (``cambrian.models.auto``)."""
        from cambrian.models.auto import CONFIG_AUTO_MAP, write_remote_code_files

        self.auto_map = {**(getattr(self, "auto_map", None) or {}), **CONFIG_AUTO_MAP}
        write_remote_code_files(save_directory)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def validate(self) -> None:
        """Check every cross-field constraint; raise ValueError naming the field and valid values."""
        if self.mm_projector_type not in CONNECTOR_TYPES:
            raise ValueError(
                f"mm_projector_type {self.mm_projector_type!r} is not a known connector; "
                f"valid: {', '.join(CONNECTOR_TYPES)}"
            )
        towers = self.tower_configs  # TowerConfig checks each token_len is square
        S = self.query_side
        if self.mm_projector_type != "sva":
            return
        if len(self.query_num_list) != self.num_query_group:
            raise ValueError(
                f"query_num_list has {len(self.query_num_list)} entries but num_query_group is "
                f"{self.num_query_group}"
            )
        if self.vision_hidden_size % self.sva_num_heads:
            raise ValueError(
                f"vision_hidden_size {self.vision_hidden_size} is not divisible by sva_num_heads "
                f"{self.sva_num_heads}"
            )
        sides = [_isqrt_exact(q, f"query_num_list entry {q}") for q in self.query_num_list]
        for s in sides + ([S] if self.sva_layer_indices else []):
            for i, t in enumerate(towers):
                if t.grid % s:
                    raise ValueError(
                        f"tower {i} ({t.family}) grid {t.grid}x{t.grid} is not divisible into {s}x{s} windows "
                        f"(sqrt(token_len) must be a multiple of every query-grid side)"
                    )
        n_layers = getattr(self.text_config, "num_hidden_layers", None)
        bad = [n for n in self.sva_layer_indices if n_layers is not None and not 0 <= n < n_layers]
        if bad:
            raise ValueError(
                f"in-LLM SVA layers after decoder layers {bad} do not exist: the LLM has {n_layers} layers "
                f"(start {self.start_of_vision_sampler_layers}, stride "
                f"{self.stride_of_vision_sampler_layers}, count {self.num_of_vision_sampler_layers})"
            )


def _register_auto() -> None:
    # Importing the config alone registers every Cambrian Auto class too, so a script that only imports
    # CambrianConfig can still call AutoModelForCausalLM.from_pretrained(dir). That imports the model and
    # processor modules (about 1.5 s on top of transformers' own config import); the config itself needs
    # only the torch-free cambrian.models.vision.config, never a tower family, timm or a vision model.
    from cambrian.models.auto import register_auto_classes

    register_auto_classes()


_register_auto()
