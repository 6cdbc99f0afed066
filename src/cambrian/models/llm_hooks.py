"""SVA layers inside any Hugging Face decoder, attached as forward hooks (never a copy of its forward).

After decoder layer ``start + k * stride`` the k-th in-LLM SVA layer refines the hidden states at
the image-query positions of the current call. The per-call vision state travels as a keyword
argument (``cambrian_sva``) that Hugging Face decoders already pass from the model's ``forward`` down
to every decoder layer, so:
- nothing is stored on the model between calls (no stale vision state, unlike the original);
- decode steps of ``generate`` carry no such argument, so SVA runs at prefill only;
- gradient checkpointing recomputes only the layer's ``forward`` (transformers checkpoints
  ``forward``, not ``__call__``), while the hook runs once, outside the checkpoint.
The decoder layers keep their own state-dict keys; the SVA weights live in the connector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SVA_KWARG = "cambrian_sva"


@dataclass
class InLLMSVACall:
    """Per-call inputs of the in-LLM SVA layers.

    ``positions``: (Nq,) flat indices into (B * T) of the image-query tokens, in the same order as
    the rows of ``state.kv`` (sample-major, image order, row-major inside each image).
    """

    state: object  # connector.sva.SVAVisionState
    positions: torch.Tensor


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
    """Forward hook running ``sva_layers[k]`` after one decoder layer."""

    def __init__(self, sva_layers: nn.ModuleList, k: int):
        # A plain list hides the ModuleList from this object's attributes, so no parameters are duplicated.
        self._layers = [sva_layers]
        self.k = k

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output):
        call: InLLMSVACall | None = kwargs.get(SVA_KWARG)
        if call is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, H)
        flat = hidden.reshape(-1, hidden.shape[-1])
        q = flat.index_select(0, call.positions)  # (Nq, H)
        layer = self._layers[0][self.k]
        new = layer(q.to(layer.proj_in.weight.dtype), call.state.kv).to(flat.dtype)
        flat = flat.index_copy(0, call.positions, new)  # out of place: autograd-safe
        hidden = flat.view_as(hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def attach_sva_hooks(llm: nn.Module, sva_layers: nn.ModuleList, after_layers: list[int]) -> list:
    """Register one hook per in-LLM SVA layer; returns the hook handles."""
    layers = decoder_layers(llm)
    handles = []
    for k, n in enumerate(after_layers):
        handles.append(layers[n].register_forward_hook(_SVAHook(sva_layers, k), with_kwargs=True))
    return handles
