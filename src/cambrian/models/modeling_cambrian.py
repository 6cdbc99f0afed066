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

``generate`` (transformers' own loop) encodes the images once, before it repeats each sample per beam
or returned sequence (``get_image_features``); ``_expand_inputs_for_generation`` then repeats each
sample's own encoded images with it, and the prefill takes them as ``mm_encoder_outputs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
)
from transformers import initialization as init

from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.models.connector import ConnectorOutput, build_connector
from cambrian.models.connector.output import segment_index
from cambrian.models.connector.sva import SVAConnector, SVALayer
from cambrian.models.llm_hooks import InLLMSVA, InLLMSVAContext
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


class NoImagePlaceholder(LogitsProcessor):
    """Never generate the ``<image>`` placeholder: a generated one has no image behind it, so the next
    step would have more placeholders than images. A no-op when the id lies outside the vocabulary."""

    def __init__(self, token_id: int | None):
        self.token_id = token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.token_id is None or not 0 <= self.token_id < scores.shape[-1]:
            return scores
        scores = scores.clone()  # (B, V)
        scores[:, self.token_id] = float("-inf")
        return scores


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
        # In-LLM SVA: hooks after the configured decoder layers, active per call (see ``llm_hooks``).
        self.in_llm_sva = InLLMSVA(self.language_model, self.connector.llm_layers, config.sva_layer_indices)
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

    # ------------------------------------------------------------------ training
    def named_parameters_by_part(self) -> Iterator[tuple[str, str, nn.Parameter]]:
        """``(part, name, parameter)`` for every parameter, in ``named_parameters`` order. Parts: ``towers``
        (vision towers), ``sva`` (SVA layers in the connector and in the LLM, learned queries),
        ``connector`` (the rest of the connector: projectors, newline) and ``llm``."""
        c = self.connector
        sva = [
            p for m in (getattr(c, "samplers", None), c.llm_layers) if m is not None for p in m.parameters()
        ]
        if isinstance(getattr(c, "vision_query", None), nn.Parameter):
            sva.append(c.vision_query)
        part = {id(p): "llm" for p in self.language_model.parameters()}
        part.update({id(p): "connector" for p in c.parameters()})
        part.update({id(p): "sva" for p in sva})
        part.update({id(p): "towers" for p in self.vision_towers.parameters()})
        for name, p in self.named_parameters():
            yield part[id(p)], name, p

    def set_trainable(
        self,
        stage: int,
        *,
        freeze_towers: bool = True,
        freeze_llm: bool | None = None,
        freeze_connector: bool = False,
    ) -> dict[str, bool]:
        """Freeze / unfreeze by part for training stage 1 (connector alignment) or 2 (instruction
        tuning); returns ``{part: trainable}`` (parts as in ``named_parameters_by_part``).

        Both stages train the connector (SVA included); stage 2 also trains the LLM. ``freeze_llm``
        overrides the stage's choice; towers train only with ``freeze_towers=False``.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage: {stage} is not one of 1 (align), 2 (finetune)")
        llm_frozen = stage == 1 if freeze_llm is None else freeze_llm
        trainable = {
            "towers": not freeze_towers,
            "connector": not freeze_connector,
            "sva": not freeze_connector,
            "llm": not llm_frozen,
        }
        for part, _, p in self.named_parameters_by_part():
            p.requires_grad_(trainable[part])
        self.set_towers_frozen(freeze_towers)
        return trainable

    def set_towers_frozen(self, frozen: bool) -> None:
        """A frozen tower runs under no_grad (``VisionTower.forward``); keep that flag and the config in step."""
        for k, tower in enumerate(self.vision_towers):
            tower.cfg.frozen = frozen
            tower.requires_grad_(not frozen)
            if isinstance(self.config.vision_towers[k], dict):
                self.config.vision_towers[k]["frozen"] = frozen

    def param_groups(self, lrs: Mapping[str, float], weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups of the trainable parameters: one per part at ``lrs[part]``, split into ``part``
        (``weight_decay``) and ``part/no_decay`` (biases, norms and other 1-D parameters)."""
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for part, _, p in self.named_parameters_by_part():
            if p.requires_grad:
                groups.setdefault((part, p.ndim >= 2), []).append(p)
        return [
            {
                "params": ps,
                "lr": lrs[part],
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '/no_decay'}",
            }
            for (part, decay), ps in sorted(groups.items())
        ]

    # ------------------------------------------------------------------ vision
    def encode_images(
        self, pixel_values: list[torch.Tensor] | torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ConnectorOutput:
        """Towers + connector. ``pixel_values[i]`` (B_img, 3, R_i, R_i) per tower (one tensor for a
        one-tower model); ``image_sizes`` (B_img, 2) as (w, h), one row per image."""
        if isinstance(pixel_values, torch.Tensor):
            pixel_values = [pixel_values]
        if image_sizes is None:
            raise ValueError("pixel_values need image_sizes (one (width, height) per image)")
        if len(pixel_values) != len(self.vision_towers):
            raise ValueError(
                f"got pixel_values for {len(pixel_values)} towers but the model has {len(self.vision_towers)}"
            )
        image_sizes = torch.as_tensor(image_sizes)
        for i, px in enumerate(pixel_values):
            if px.shape[0] != image_sizes.shape[0]:
                raise ValueError(
                    f"pixel_values[{i}] holds {px.shape[0]} images but image_sizes has {image_sizes.shape[0]} "
                    "rows; every tower takes the same images, with one image_sizes row per image"
                )
        feats = []
        for tower, px in zip(self.vision_towers, pixel_values):
            dtype = next(tower.parameters()).dtype
            feats.append(tower(px.to(dtype)).to(self.connector_dtype))
        return self.connector(feats, image_sizes.to(feats[0].device))

    def get_image_features(
        self,
        pixel_values: list[torch.Tensor] | torch.Tensor | None,
        image_sizes: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> ConnectorOutput | None:
        """``encode_images`` under Hugging Face's name: ``generate`` calls it once, before it repeats the
        inputs per beam / returned sequence, and hands the result to ``forward`` as
        ``mm_encoder_outputs={"image": ...}``. ``return_dict`` belongs to that call; the result is always
        a ``ConnectorOutput`` (None without images)."""
        if pixel_values is None:
            return None
        return self.encode_images(pixel_values, image_sizes)

    @property
    def connector_dtype(self) -> torch.dtype:
        return next(self.connector.parameters()).dtype

    def _images_per_sample(self, image_mask: torch.Tensor, images: ConnectorOutput) -> torch.Tensor:
        """(B,) long: how many of ``images`` each row of ``image_mask`` (B, T) holds.

        Images fill the placeholder slots in order, row by row; checks that their token counts add up
        to each row's placeholders, so no image is split across two samples.
        """
        slots = image_mask.sum(-1)  # (B,)
        per_image = images.tokens_per_image.to(slots.device)  # (B_img,)
        n_slots, n_tokens = int(slots.sum()), int(per_image.sum())
        if n_slots == 0:
            raise ValueError(
                f"got {per_image.numel()} images but input_ids contain no image placeholder tokens "
                f"(id {self.config.image_token_id}); put one <image> in the text per image"
            )
        if n_tokens != n_slots:
            raise ValueError(
                f"image features and image tokens do not match: the {per_image.numel()} images give "
                f"{n_tokens} tokens but input_ids contain {n_slots} placeholders; "
                "use CambrianProcessor to expand each <image> for its image size"
            )
        first_slot = per_image.cumsum(0) - per_image  # (B_img,) counted over the whole batch
        row = torch.searchsorted(slots.cumsum(0), first_slot, right=True)  # (B_img,) row of each image
        fits = torch.zeros_like(slots).index_add_(0, row, per_image) == slots  # (B,)
        if not bool(fits.all()):
            bad = int((~fits).nonzero()[0])
            raise ValueError(
                f"image features and image tokens do not match in row {bad}: it has {int(slots[bad])} "
                "placeholders, which the images given for it (in order) do not fill exactly; "
                "use CambrianProcessor to expand each <image> for its image size"
            )
        return torch.bincount(row, minlength=slots.numel())

    def _splice_images(
        self, image_mask: torch.Tensor, inputs_embeds: torch.Tensor, images: ConnectorOutput | None
    ) -> tuple[torch.Tensor, InLLMSVAContext | None]:
        """Scatter the images' tokens into the placeholder slots ``image_mask`` (B, T); also returns the
        in-LLM SVA context of the call (None when the connector has no in-LLM layers)."""
        if images is None:
            n_slots = int(image_mask.sum())
            if n_slots:
                raise ValueError(
                    f"input_ids contain {n_slots} image placeholder tokens (id {self.config.image_token_id}) "
                    "but no pixel_values were given"
                )
            return inputs_embeds, None
        per_sample = self._images_per_sample(image_mask, images)
        embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), images.embeds.to(inputs_embeds.dtype))
        context = None
        if images.vision_state is not None:
            context = InLLMSVAContext.from_slots(
                image_mask, images.is_query, images.vision_state.kv, per_sample
            )
        return embeds, context

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
        mm_encoder_outputs: dict[str, ConnectorOutput | None] | None = None,
        **kwargs: Any,
    ):
        """Returns the wrapped LLM's ``CausalLMOutputWithPast``; logits align with ``input_ids``.

        Images come either raw (``pixel_values`` + ``image_sizes``) or already encoded as
        ``mm_encoder_outputs["image"]`` (``get_image_features``; ``generate`` passes them so at prefill).
        """
        images = (mm_encoder_outputs or {}).get("image")
        if images is not None and pixel_values is not None:
            raise ValueError(
                "pass images either as pixel_values or pre-encoded in mm_encoder_outputs, not both"
            )
        sva_context = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (or inputs_embeds)")
            image_mask = input_ids == self.config.image_token_id
            # The placeholder id may lie outside the LLM vocabulary: never embed it.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            if pixel_values is not None:
                images = self.encode_images(pixel_values, image_sizes)
            inputs_embeds, sva_context = self._splice_images(image_mask, inputs_embeds, images)
        elif pixel_values is not None or images is not None:
            raise ValueError("images need input_ids (their <image> placeholders say where images go)")
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so a sample's logits do not depend on its padding side.
            pos = attention_mask.long().cumsum(-1) - 1
            position_ids = pos.masked_fill(attention_mask == 0, 1)[:, -inputs_embeds.shape[1] :]
        with self.in_llm_sva.active(sva_context):  # reset on exit; checks every SVA layer fired
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

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: Any | None = None,
        logits_processor: LogitsProcessorList | None = None,
        **kwargs: Any,
    ):
        """``GenerationMixin.generate`` that never emits the ``<image>`` placeholder: ``NoImagePlaceholder``
        runs before the caller's own ``logits_processor``, so a custom sampler already gets it at -inf."""
        processors = LogitsProcessorList(
            [NoImagePlaceholder(self.config.image_token_id), *(logits_processor or [])]
        )
        return super().generate(inputs, generation_config, logits_processor=processors, **kwargs)

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[torch.LongTensor | None, dict[str, Any]]:
        """Repeat every sample ``expand_size`` times (beam search, several returned sequences).

        ``generate`` has already encoded the images once (``get_image_features``) into
        ``mm_encoder_outputs["image"]``, whose rows are images, not samples: each sample's OWN images
        (0..k, in placeholder order) are repeated with it, so sample b's copies b*e .. b*e+e-1 find
        theirs in order, and the towers never run per beam. Everything else is expanded by transformers.
        """
        encoded = model_kwargs.pop("mm_encoder_outputs", None)
        images = (encoded or {}).get("image")
        if expand_size > 1 and images is not None:
            if input_ids is None:
                raise ValueError("generating from images needs input_ids (their <image> placeholders)")
            per_sample = self._images_per_sample(input_ids == self.config.image_token_id, images)  # (B,)
            copies = torch.arange(per_sample.numel(), device=per_sample.device).repeat_interleave(expand_size)
            encoded = {**encoded, "image": images.select_images(segment_index(per_sample, copies))}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size,
            is_encoder_decoder=is_encoder_decoder,
            input_ids=input_ids,
            **model_kwargs,
        )
        if encoded is not None:
            model_kwargs["mm_encoder_outputs"] = encoded
        return input_ids, model_kwargs


def _register_auto() -> None:
    # Registered here, where the model class lives, so any import path to the model registers it (config,
    # AutoModelForCausalLM, AutoModelForImageTextToText, image processor and processor alike).
    from cambrian.models.auto import register_auto_classes

    register_auto_classes()


_register_auto()
