"""SVA layers inside any Hugging Face decoder, attached as forward hooks (never a copy of its forward).

After decoder layer ``start + k * stride`` the k-th in-LLM SVA layer refines the hidden states at
the image-query positions of the current call. The decoder layers themselves are not replaced, so
they keep their own state-dict keys (the SVA weights live in the connector) and their own classes
(gradient checkpointing, FSDP wrap policies and ``_no_split_modules`` still see them).

The per-call vision state is one typed ``InLLMSVAContext``, made active for exactly one call of the
LLM by ``InLLMSVA.active`` (a context manager) and reset afterwards, also when the call raises:
- nothing is stored on the model between calls (no stale vision state, unlike the original), and the
  state does not depend on the LLM passing extra keyword arguments down to its layers;
- decode steps of ``generate`` have no images, hence no context, so SVA runs at prefill only;
- the context lives in a ``ContextVar``, so two threads (or asyncio tasks) running the same model
  each see their own;
- transformers' gradient checkpointing wraps a layer's ``forward``, not ``__call__``, so the hooks
  run once, outside the checkpoint, and the backward recompute never needs the context. (A wrapper
  that checkpoints ``__call__`` itself, e.g. torch's ``checkpoint_wrapper``, would recompute the
  layer without the context; use ``gradient_checkpointing_enable`` instead.)

Every hook that runs under a context is counted. When the call returns, each configured layer must
have fired exactly once; otherwise a ``RuntimeError`` names the expected and fired layers (a custom
decoder loop, a layer called through ``.forward``, a replaced or removed hook would otherwise skip
the in-LLM SVA silently).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

from cambrian.models.connector.sva import WindowedKV


@dataclass(frozen=True)
class InLLMSVAContext:
    """Everything the in-LLM SVA layers read during one forward call of the LLM.

    Built from the placeholder tokens of each sample (``from_slots``) after ``generate`` has re-selected
    each sample's own images per beam / returned sequence (``ConnectorOutput.select_images``).

    Attributes:
        kv: key/value inputs of every image-query token: per tower i the windowed features
            (Nq, r_i^2, V) and masks (Nq, r_i^2), the image of each query (Nq,) and the per-image
            global context (B_img, V).
        positions: (Nq,) long, flat indices into the (B * T) hidden states of the image-query tokens,
            in the row order of ``kv`` (sample-major, image order, row-major inside each image; the
            newline tokens are not among them).
        seq_shape: (B, T) of the hidden states ``positions`` index.
        images_per_sample: (B,) long, how many images each row holds.
    """

    kv: WindowedKV
    positions: torch.Tensor
    seq_shape: tuple[int, int]
    images_per_sample: torch.Tensor

    def __post_init__(self) -> None:
        # Shape checks only: nothing here synchronises with the device.
        n = self.positions.numel()
        rows = {"image_index": self.kv.image_index.shape[0]}
        rows.update({f"features[{i}]": x.shape[0] for i, x in enumerate(self.kv.features)})
        rows.update({f"masks[{i}]": m.shape[0] for i, m in enumerate(self.kv.masks)})
        bad = {k: v for k, v in rows.items() if v != n}
        if bad:
            raise ValueError(f"in-LLM SVA context: {n} query positions but key/value rows {bad}")
        if self.images_per_sample.numel() != self.seq_shape[0]:
            raise ValueError(
                f"in-LLM SVA context: images_per_sample has {self.images_per_sample.numel()} rows "
                f"for a batch of {self.seq_shape[0]}"
            )

    @classmethod
    def from_slots(
        cls,
        image_mask: torch.Tensor,
        is_query: torch.Tensor,
        kv: WindowedKV,
        images_per_sample: torch.Tensor,
    ) -> InLLMSVAContext:
        """The context of one call from its placeholder tokens.

        Args:
            image_mask: (B, T) bool, the ``<image>`` placeholder slots of the call's input_ids.
            is_query: (Ntok,) bool over all the slots in sequence order: latent-query tokens (False
                for newline tokens).
            kv: the images' key/values (``SVAVisionState.kv``), one row per query token.
            images_per_sample: (B,) long.
        """
        slot_positions = image_mask.flatten().nonzero().squeeze(-1)  # (Ntok,) in sequence order
        positions = slot_positions[is_query.to(slot_positions.device)]  # (Nq,)
        b, t = image_mask.shape
        return cls(kv, positions, (b, t), images_per_sample)


@dataclass
class _Run:
    """One active call: which hooks object it belongs to, its context and the layers that fired."""

    owner: InLLMSVA
    context: InLLMSVAContext
    fired: list[int] = field(default_factory=list)  # decoder-layer indices, in firing order


_ACTIVE: ContextVar[_Run | None] = ContextVar("cambrian_in_llm_sva", default=None)


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a Hugging Face causal LM."""
    decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else getattr(llm, "model", llm)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"{type(llm).__name__}: cannot find its decoder layers (expected `get_decoder().layers`); "
            "in-LLM SVA needs them"
        )
    return layers


class _SVAHook:
    """Forward hook running ``sva_layers[k]`` after decoder layer ``n`` while its owner's context is active."""

    def __init__(self, owner: InLLMSVA, sva_layers: nn.ModuleList, k: int, n: int):
        self.owner = owner
        # A plain list hides the ModuleList from this object's attributes, so no parameters are duplicated.
        self._layers = [sva_layers]
        self.k, self.n = k, n

    def __call__(self, module: nn.Module, args: tuple, output):
        run = _ACTIVE.get()
        if run is None or run.owner is not self.owner:
            return None
        run.fired.append(self.n)
        ctx = run.context
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, H)
        if tuple(hidden.shape[:2]) != ctx.seq_shape:
            raise RuntimeError(
                f"in-LLM SVA after decoder layer {self.n}: its hidden states are {tuple(hidden.shape)} but the "
                f"image positions index a (batch, length) of {ctx.seq_shape}"
            )
        flat = hidden.reshape(-1, hidden.shape[-1])
        q = flat.index_select(0, ctx.positions)  # (Nq, H)
        layer = self._layers[0][self.k]
        new = layer(q.to(layer.proj_in.weight.dtype), ctx.kv).to(flat.dtype)
        flat = flat.index_copy(0, ctx.positions, new)  # out of place: autograd-safe
        hidden = flat.view_as(hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class InLLMSVA:
    """The in-LLM SVA layers of one model, hooked after decoder layers ``after_layers`` of its LLM.

    ``sva_layers[k]`` runs after decoder layer ``after_layers[k]``. A plain object, not a module: the
    SVA weights stay registered in the connector only.

    >>> with model.in_llm_sva.active(context):   # what CambrianForCausalLM.forward does
    ...     out = model.language_model(inputs_embeds=embeds)
    >>> with model.in_llm_sva.disabled():        # the same model with the in-LLM aggregator off
    ...     out = model(**batch)
    """

    def __init__(self, llm: nn.Module, sva_layers: nn.ModuleList, after_layers: list[int]):
        if len(sva_layers) != len(after_layers):
            raise ValueError(f"{len(sva_layers)} in-LLM SVA layers for {len(after_layers)} decoder layers")
        self.after_layers = list(after_layers)
        self.enabled = True
        layers = decoder_layers(llm) if self.after_layers else None
        self.handles = [
            layers[n].register_forward_hook(_SVAHook(self, sva_layers, k, n))
            for k, n in enumerate(self.after_layers)
        ]

    def current(self) -> InLLMSVAContext | None:
        """The context of the call in progress (None outside one, during decode steps and text-only calls)."""
        run = _ACTIVE.get()
        return run.context if run is not None and run.owner is self else None

    @contextmanager
    def active(self, context: InLLMSVAContext | None) -> Iterator[None]:
        """Make ``context`` the one the hooks read during the block (None: no in-LLM SVA in the block).

        The previous state is restored on exit, also when the block raises. When the block returns
        normally under a context, every configured layer must have fired exactly once.
        """
        run = _Run(self, context) if context is not None and self.enabled and self.after_layers else None
        token = _ACTIVE.set(run)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
        if run is not None:
            self._check_fired(run.fired)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The in-LLM SVA layers do not run during the block (the LLM sees only the spliced embeddings)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def remove(self) -> None:
        """Detach every hook (a model without them refuses calls with images: see ``active``)."""
        for handle in self.handles:
            handle.remove()

    def _check_fired(self, fired: list[int]) -> None:
        expected = Counter(self.after_layers)
        got = Counter(fired)
        if got == expected:
            return
        missing = sorted((expected - got).elements())
        repeated = sorted((got - expected).elements())
        problems = []
        if missing:
            problems.append(f"never ran after decoder layers {missing}")
        if repeated:
            problems.append(f"ran more than once after decoder layers {repeated}")
        raise RuntimeError(
            f"in-LLM SVA: expected {len(self.after_layers)} layers to fire (after decoder layers "
            f"{self.after_layers}), but {len(fired)} fired (after {fired}): it {' and '.join(problems)}. "
            "The LLM did not call those decoder layers through their forward hooks (a custom decoder "
            "loop, a layer called through .forward, a replaced layer or a removed hook), so the image "
            "features would have skipped them silently."
        )
