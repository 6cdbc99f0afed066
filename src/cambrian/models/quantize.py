"""Weight-only quantisation of a loaded Cambrian model's LLM, for serving with less memory.

``quantize_model(model, mode)`` swaps the linear layers of ``model.language_model`` (attention and MLP
projections of every decoder layer) for quantised ones, in place; activations stay in the loading dtype.

- ``int8``: optimum-quanto ``qint8`` weights (per output channel, symmetric), CPU or GPU. Chosen over
  torchao's ``Int8WeightOnlyConfig`` by measurement on CPU (bench/quantize.py and the lead's report): the
  same memory and logit drift; on a bfloat16 model quanto's packed int8 matmul decodes ~1.9x faster than
  torchao (and faster than unquantised bfloat16), while on a float32 model torchao is ~1.6x faster
  (both then rebuild a float weight per call); and quanto's weights survive the SVA connector
  multiplying them with its LayerNorm scales, which torchao refuses (``include_vision`` needs that).
  On CPU, int8 pays off with ``dtype="bfloat16"``.
- ``nf4`` / ``int8-bnb``: bitsandbytes 4-bit NormalFloat / LLM.int8() layers; CUDA only, and the model
  ends up on the current CUDA device (bitsandbytes quantises a weight when it moves there).

Kept in the loading dtype: the input embedding and ``lm_head`` (quickstart models tie ``lm_head`` to
the embedding, so quantising it would add an int8 copy beside the float embedding, not replace it;
and it makes the logits directly), every norm, the vision towers and the SVA connector (including the
in-LLM SVA layers, which live in the connector and run through forward hooks on the untouched HF
decoder layers). ``include_vision=True`` also quantises the towers' and connector's linears (int8;
all but the SVA layers' ``proj_in``, whose weight the layer splits).
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn

QUANTIZE_MODES = ("int8", "nf4", "int8-bnb")
BNB_MODES = ("nf4", "int8-bnb")


def check_mode(mode: str, include_vision: bool = False) -> None:
    """Raise the one-line error for a mode we cannot apply (checked before a model is loaded)."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize mode {mode!r} is not supported; valid: {', '.join(QUANTIZE_MODES)}")
    if include_vision and mode != "int8":
        raise ValueError(f"include_vision quantises the towers and connector with int8 only, not {mode!r}")
    if mode in BNB_MODES:
        if not torch.cuda.is_available():
            raise ValueError(f"quantize mode {mode!r} needs a CUDA device and `pip install bitsandbytes`")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ValueError(
                f"quantize mode {mode!r} needs a CUDA device and `pip install bitsandbytes` ({err})"
            ) from None
    else:
        try:
            import optimum.quanto  # noqa: F401
        except ImportError as err:
            raise ValueError(
                f"quantize mode {mode!r} needs `pip install optimum-quanto` (cambrian[serve]) ({err})"
            ) from None


def llm_linear_names(model) -> list[str]:
    """Names (relative to ``model.language_model``) of the LLM linears to quantise: all but ``lm_head``."""
    llm = model.language_model
    head = llm.get_output_embeddings()
    return [n for n, m in llm.named_modules() if _plain_linear(m) and m is not head]


def _plain_linear(module: nn.Module) -> bool:
    # nn.MultiheadAttention's out_proj is a Linear subclass whose weight the attention reads directly.
    return isinstance(module, nn.Linear) and not isinstance(
        module, nn.modules.linear.NonDynamicallyQuantizableLinear
    )


def quantize_model(model, mode: str, include_vision: bool = False):
    """Quantise ``model``'s LLM linears weight-only (in place) and return it; see the module docstring.

    ``mode``: one of ``QUANTIZE_MODES``. ``model.language_model`` stays the same HF model object (its
    linears become quantised subclasses of ``nn.Linear``); ``model.quantize_mode`` records the mode.
    """
    check_mode(mode, include_vision)
    if getattr(model, "quantize_mode", None):
        raise ValueError(
            f"the model is already quantised ({model.quantize_mode}); load it again to change mode"
        )
    parts = [(model.language_model, llm_linear_names(model))]
    if include_vision:
        towers, connector = model.vision_towers, model.connector
        parts.append((towers, [n for n, m in towers.named_modules() if _plain_linear(m)]))
        # An SVA layer splits its proj_in weight into query and context halves (connector/sva.py), which
        # a quantised tensor cannot do under inference_mode: that one stays float.
        keep = [n for n, m in connector.named_modules() if _plain_linear(m) and not n.endswith("proj_in")]
        parts.append((connector, keep))
    if mode == "int8":
        _quanto_int8(parts)
    else:
        _bnb(model, parts, mode)
    model.quantize_mode = mode
    return model


def _quanto_int8(parts: list[tuple[nn.Module, list[str]]]) -> None:
    from optimum.quanto import freeze, qint8, quantize

    for root, names in parts:
        if names:
            # include: exact module names (fnmatch patterns; module names hold no wildcard characters)
            quantize(root, weights=qint8, include=names)
            freeze(root)  # float weights -> int8 data + per-row scale; the float copies are freed


def _bnb(model, parts: list[tuple[nn.Module, list[str]]], mode: str) -> None:
    import bitsandbytes as bnb

    for root, names in parts:
        for name in names:
            old = root.get_submodule(name)
            weight = old.weight.detach().to("cpu")  # bitsandbytes quantises a CPU weight on its move to CUDA
            bias = old.bias is not None
            if mode == "nf4":
                new = bnb.nn.Linear4bit(
                    old.in_features, old.out_features, bias=bias, compute_dtype=weight.dtype,
                    quant_type="nf4", device="meta",
                )  # fmt: skip
                new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", module=new)
            else:
                new = bnb.nn.Linear8bitLt(
                    old.in_features, old.out_features, bias=bias, has_fp16_weights=False, threshold=6.0,
                    device="meta",
                )  # fmt: skip
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            if bias:
                new.bias = nn.Parameter(old.bias.detach().to("cpu"), requires_grad=False)
            parent, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, child, new)
    model.to(torch.device("cuda", torch.cuda.current_device()))


# ---------------------------------------------------------------------------------------------- memory
def storage_bytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters and buffers, counting what quantised weights really store.

    Tensor subclasses (quanto) count their inner tensors (int8 data + scales); bitsandbytes parameters
    count their packed data plus the quantisation state (absmax, code, per-row scales). Storage shared
    between tensors (tied weights) counts once.
    """
    tensors = list(chain(module.parameters(), module.buffers()))
    for m in module.modules():  # LLM.int8() layers move the weight's row scales to their state at first use
        state = getattr(m, "state", None)
        tensors += [
            getattr(state, k) for k in ("CB", "SCB") if isinstance(getattr(state, k, None), torch.Tensor)
        ]
    seen: set[tuple[str, int]] = set()
    return sum(_tensor_bytes(t, seen) for t in tensors)


def _tensor_bytes(t: torch.Tensor, seen: set[tuple[str, int]]) -> int:
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n), seen) for n in names)
    extra = []
    state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit
    if state is not None:
        extra = [state.absmax, state.code]  # per-block scales (B,), the 16-entry NF4 table
        if state.nested:  # the absmax are themselves quantised: their scales, table and offset
            extra += [state.state2.absmax, state.state2.code, state.offset]
    if isinstance(getattr(t, "SCB", None), torch.Tensor):  # bitsandbytes int8: per-row scales
        extra = [t.SCB]
    storage = t.untyped_storage()
    key = (str(t.device), storage.data_ptr())
    own = 0 if key in seen and key[1] else storage.nbytes()
    seen.add(key)
    return own + sum(_tensor_bytes(e, seen) for e in extra)


__all__ = ["QUANTIZE_MODES", "check_mode", "llm_linear_names", "quantize_model", "storage_bytes"]
