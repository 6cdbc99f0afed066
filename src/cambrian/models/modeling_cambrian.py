"""`CambrianForCausalLM`: vision towers -> connector (SVA) -> any Hugging Face causal LM.

The forward pass:
1. ``<image>`` placeholder tokens in ``input_ids`` mark every image slot (the processor expands each
   ``<image>`` into that image's slot count), so slots come from each sample's own tokens: left or
   right padding, images in later turns, several images per sample and text-only samples all work.
2. The towers encode ``pixel_values`` (one tensor per tower, all images of the batch in order), the
   connector turns them into packed image tokens, and these are scattered into the placeholder
   positions of the LLM's input embeddings.
3. The wrapped LLM runs its own, unmodified forward; in-LLM SVA layers run as hooks after the
   configured decoder layers, at prefill only (see ``llm_hooks``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init

from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.models.connector import ConnectorOutput, build_connector
from cambrian.models.connector.sva import SVAConnector, SVALayer
from cambrian.models.llm_hooks import SVA_KWARG, InLLMSVACall, attach_sva_hooks
from cambrian.models.vision import build_tower


def _skip_our_init(module: nn.Module) -> None:
    """Keep our ``_init_weights`` off a tower's own (timm) modules: towers come pretrained or from the
    checkpoint. Hugging Face sub-models are left alone so their own init still rebuilds their
    non-persistent buffers (e.g. CLIP's ``position_ids``) when loading from the meta device."""
    if isinstance(module, PreTrainedModel):
        return
    module._is_hf_initialized = True
    for child in module.children():
        _skip_our_init(child)


class CambrianPreTrainedModel(PreTrainedModel):
    config_class = CambrianConfig
    config: CambrianConfig
    base_model_prefix = "cambrian"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ("past_key_values",)
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch defaults for our own Linear/LayerNorm layers (as the original: its modules were created
        # after HF's init), and the documented scales for the learned query, newline and position embeddings.
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features) if module.in_features > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SVALayer):
            for p in module.pos_embed.values():
                init.normal_(p)
        if isinstance(module, SVAConnector):
            init.normal_(module.vision_query, std=1 / math.sqrt(module.dim))
        if getattr(module, "image_newline", None) is not None and isinstance(
            module.image_newline, nn.Parameter
        ):
            h = module.image_newline.shape[-1]
            init.normal_(module.image_newline, std=1 / math.sqrt(h))


class CambrianForCausalLM(CambrianPreTrainedModel, GenerationMixin):
    """A Cambrian multimodal LLM; ``language_model`` is an unmodified ``AutoModelForCausalLM``."""

    def __init__(self, config: CambrianConfig):
        super().__init__(config)
        config.validate()
        towers = [build_tower(t) for t in config.tower_configs]
        for tower in towers:
            _skip_our_init(tower)
        self.vision_towers = nn.ModuleList(towers)
        self.connector = build_connector(
            config, [t.hidden_size for t in towers], [t.cfg.grid for t in towers]
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self._sva_hooks = attach_sva_hooks(
            self.language_model, self.connector.llm_layers, config.sva_layer_indices
        )
        self.post_init()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *args: Any,
        tower_paths: dict[str, str] | None = None,
        allow_download: bool = False,
        **kwargs: Any,
    ):
        """Our saved format (standard Hugging Face loading) or a directory in the released Cambrian-1 layout.

        For the released layout the towers are not in the checkpoint: each tower name resolves to a local
        directory (``tower_paths={name: dir}``, or a directory relative to the checkpoint), and a hub download
        happens only with ``allow_download=True``.
        """
        from pathlib import Path

        from cambrian.models.released import is_released_checkpoint, load_released

        path = Path(str(pretrained_model_name_or_path))
        if path.is_dir() and is_released_checkpoint(path):
            dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
            if kwargs:
                raise TypeError(f"unsupported arguments for a released-layout checkpoint: {sorted(kwargs)}")
            return load_released(cls, path, tower_paths, allow_download, dtype=dtype)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ------------------------------------------------------------------ HF plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # ------------------------------------------------------------------ vision
    def encode_images(self, pixel_values: list[torch.Tensor], image_sizes: torch.Tensor) -> ConnectorOutput:
        """Towers + connector. ``pixel_values[i]`` (B_img, 3, R_i, R_i); ``image_sizes`` (B_img, 2) (w, h)."""
        if len(pixel_values) != len(self.vision_towers):
            raise ValueError(
                f"got pixel_values for {len(pixel_values)} towers but the model has {len(self.vision_towers)}"
            )
        feats = []
        for tower, px in zip(self.vision_towers, pixel_values):
            dtype = next(tower.parameters()).dtype
            feats.append(tower(px.to(dtype)).to(self.connector_dtype))
        return self.connector(feats, image_sizes.to(feats[0].device))

    @property
    def connector_dtype(self) -> torch.dtype:
        return next(self.connector.parameters()).dtype

    def _splice_images(
        self,
        image_mask: torch.Tensor,
        inputs_embeds: torch.Tensor,
        pixel_values: list[torch.Tensor] | None,
        image_sizes: torch.Tensor | None,
    ) -> tuple[torch.Tensor, InLLMSVACall | None]:
        """Scatter the images' tokens into the placeholder slots ``image_mask`` (B, T)."""
        n_slots = int(image_mask.sum())
        if pixel_values is None:
            if n_slots:
                raise ValueError(
                    f"input_ids contain {n_slots} image placeholder tokens (id {self.config.image_token_id}) "
                    "but no pixel_values were given"
                )
            return inputs_embeds, None
        if image_sizes is None:
            raise ValueError("pixel_values need image_sizes (one (width, height) per image)")
        if n_slots == 0:
            raise ValueError(
                f"got {len(image_sizes)} images but input_ids contain no image placeholder tokens "
                f"(id {self.config.image_token_id}); put one <image> in the text per image"
            )
        out = self.encode_images(pixel_values, image_sizes)
        if out.embeds.shape[0] != n_slots:
            raise ValueError(
                f"image features and image tokens do not match: the {len(image_sizes)} images give "
                f"{out.embeds.shape[0]} tokens but input_ids contain {n_slots} placeholders; "
                "use CambrianProcessor to expand each <image> for its image size"
            )
        embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), out.embeds.to(inputs_embeds.dtype))
        call = None
        if out.vision_state is not None:
            slot_positions = image_mask.flatten().nonzero().squeeze(-1)  # (Ntok,) in sequence order
            call = InLLMSVACall(out.vision_state, slot_positions[out.is_query.to(slot_positions.device)])
        return embeds, call

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        image_sizes: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ):
        """Returns the wrapped LLM's ``CausalLMOutputWithPast``; logits align with ``input_ids``."""
        if isinstance(pixel_values, torch.Tensor):
            pixel_values = [pixel_values]
        sva_call = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (or inputs_embeds)")
            image_mask = input_ids == self.config.image_token_id
            # The placeholder id may lie outside the LLM vocabulary: never embed it.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            inputs_embeds, sva_call = self._splice_images(
                image_mask, inputs_embeds, pixel_values, image_sizes
            )
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids (their <image> placeholders say where images go)")
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so a sample's logits do not depend on its padding side.
            pos = attention_mask.long().cumsum(-1) - 1
            position_ids = pos.masked_fill(attention_mask == 0, 1)[:, -inputs_embeds.shape[1] :]
        if sva_call is not None:
            kwargs[SVA_KWARG] = sva_call
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )


def _register_auto() -> None:
    # Registered here, where the model class lives, so any import path to the model registers it.
    from transformers import AutoConfig

    AutoConfig.register("cambrian", CambrianConfig, exist_ok=True)
    AutoModelForCausalLM.register(CambrianConfig, CambrianForCausalLM, exist_ok=True)


_register_auto()
