"""CPU throughput of the Cambrian model, ours against the literal original, with output parity checks.

Run: ``.venv/bin/python bench/model.py [--quick]`` (``make bench``). Prints rich tables; asserts nothing
about speed.

1. Connector at the released SVA dimensions: V = 1024, 576 queries (S = 24), four towers of
   576/576/576/9216 tokens with channel widths 1152/1024/1536/5760 (SigLIP, CLIP, DINOv2, ConvNeXt),
   D = 3, 16 heads, LLM width 4096 (Cambrian-8B), no in-LLM layers. The big towers are not built:
   random tower features of the right shapes go straight to ``SVAConnector`` and to the original's
   ``OriginalCambrian.encode_images`` (tests/reference/original.py), both holding the same weights.
   Images/s at batch 1 (square) and batch 8 (336x336, 640x480, 480x640, 1920x1080 cycling; plus an
   all-square batch 8 in the full run), the speed-up over the original and the max abs difference
   of the packed image tokens (kept queries and newlines).
2. Whole model with a small LLM: a random Llama (hidden 768, 6 layers, 12 heads / 4 KV heads, vocab
   32000) with the released SVA widths and K = 2 in-LLM SVA layers (start 0, stride 3 as Cambrian-8B,
   which gives two layers in a 6-layer LLM). Towers are bypassed honestly: each tower is an identity
   "feature tower" (registered here as family ``bench-features``) whose input is already the tower's
   output, so ``CambrianForCausalLM.forward`` runs its real path (placeholder splice -> ``encode_images``
   -> connector -> LLM with in-LLM SVA hooks) on exactly the features the original gets.
   - batch 1, square image: prefill and greedy-decode tokens/s against the bare LLM (a separate
     ``LlamaForCausalLM`` with the same weights and no hooks) at the same context length; the
     decode overhead should stay within 5%. Prefill here keeps only the last logits (generation style).
   - batch 8, mixed aspect ratios: prefill (full logits) of ours against ``OriginalCambrian`` (one
     image per sample, placed at ``image_position``), speed-up and max abs logit difference on the
     real tokens, then where that time goes (connector / in-LLM SVA / the rest, timed with hooks)
     and a line stating whether the targets (>= 1.5x over the original, <= 5% decode overhead) are met.

Timing: ``torch.inference_mode()``, default thread count, warm-up runs, median of repetitions.
Peak memory: the rise of the process's resident set (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) over its size before the timed runs; falls back to ``ru_maxrss`` elsewhere.
The machine may be shared, so single figures are noisy; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import gc
import platform
import re
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from cambrian.models.connector.geometry import image_token_counts
from cambrian.models.connector.sva import SVAConnector
from cambrian.models.released import rename_released_key
from cambrian.models.vision import TOWERS, TowerConfig, TowerFamily, VisionTower, register_family

REPO = Path(__file__).resolve().parents[1]

# Released connector dimensions (docs/checkpoint-format.md 1, 2.5).
TOWER_DIMS = [1152, 1024, 1536, 5760]
TOKEN_LENS = [576, 576, 576, 9216]
V, S, DEPTH, HEADS = 1024, 24, 3, 16
H_8B = 4096
MIXED_SIZES = [(336, 336), (640, 480), (480, 640), (1920, 1080)]  # (w, h)

# The small LLM of part 2.
SMALL_LLAMA = dict(
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=6,
    num_attention_heads=12,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)
IMAGE_POSITION = 91  # Cambrian-8B's: text tokens before the image
SUFFIX_LEN = 24  # text tokens after the image
IMAGE_TOKEN_ID = SMALL_LLAMA["vocab_size"] - 1  # our placeholder id (never embedded)

console = Console(width=None if sys.stdout.isatty() else 160)


def _reference():
    """The literal original (tests/reference/original.py), importable once the repo root is on sys.path."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.reference import original

    return original


# ----------------------------------------------------------------------------------------- measuring


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
        return True
    except OSError:
        return False


@dataclass
class Measurement:
    times: list[float]
    peak_mib: float | None  # rise of the resident set over its size before the runs
    output: Any = field(repr=False, default=None)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(fn: Callable[[], Any], reps: int, warmup: int) -> Measurement:
    """Median wall time of ``fn`` over ``reps`` runs after ``warmup`` runs; keeps the last output."""
    for _ in range(warmup):
        out = fn()
        del out
    gc.collect()
    out = None
    times = []
    start_rss = _status_kib("VmRSS")
    exact = _reset_peak() and start_rss is not None
    for _ in range(reps):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    if exact:
        peak = (_status_kib("VmHWM") - start_rss) / 1024
    else:  # process-wide peak since start (an upper bound)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Measurement(times, peak, out)


def _interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, Measurement]:
    """Like ``measure`` for several functions, alternating them so drifting load hits all alike."""
    results = {k: Measurement([], 0.0) for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(reps):
        for k, fn in fns.items():
            m = measure(fn, 1, 0)
            results[k].times += m.times
            results[k].peak_mib = max(results[k].peak_mib or 0.0, m.peak_mib or 0.0)
            results[k].output = m.output
    return results


class PartTimer:
    """Wall time spent in named parts of a forward pass (module hooks or wrapped instance methods)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._handles: list[Any] = []

    def _add(self, name: str, dt: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + dt

    def module(self, module: nn.Module, name: str) -> None:
        def pre(_m, _args):
            self._start[name] = time.perf_counter()

        def post(_m, _args, _out):
            self._add(name, time.perf_counter() - self._start.pop(name))

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def method(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - t0)

        setattr(obj, attr, timed)
        self._handles.append(types.SimpleNamespace(remove=lambda: delattr(obj, attr)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} MiB"


# ---------------------------------------------------------------------------------- part 1: connector


def _connector_cfg(hidden_size: int, k: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden_size,
        "mm_projector_type": "sva",
        "vision_hidden_size": V,
        "num_query_group": 1,
        "query_num_list": [S * S],
        "connector_depth": DEPTH,
        "image_token_len": S * S,
        "mm_vision_tower_aux_token_len_list": TOKEN_LENS,
        "num_of_vision_sampler_layers": k,
        "start_of_vision_sampler_layers": 0,
        "stride_of_vision_sampler_layers": 3,
        "connector_only": k == 0,
        "image_position": IMAGE_POSITION,
    }


def _sizes(batch: int, square: bool) -> list[tuple[int, int]]:
    return [MIXED_SIZES[0] if square else MIXED_SIZES[i % len(MIXED_SIZES)] for i in range(batch)]


def _tower_feats(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, c, generator=g) for n, c in zip(TOKEN_LENS, TOWER_DIMS)]


def bench_connector(runs: list[tuple[int, bool]], reps: int) -> list[dict[str, Any]]:
    original = _reference()
    torch.manual_seed(0)
    # The original's connector alone: an LLM stub with no modules, so only ``model.*`` connector keys exist.
    stub = types.SimpleNamespace(config=None, model=nn.Module(), lm_head=nn.Identity())
    orig = original.OriginalCambrian(_connector_cfg(H_8B, 0), stub, TOWER_DIMS, num_heads=HEADS).eval()
    ours = SVAConnector(
        tower_dims=TOWER_DIMS,
        tower_grids=[round(n**0.5) for n in TOKEN_LENS],
        llm_hidden_size=H_8B,
        dim=V,
        image_token_len=S * S,
        query_num_list=[S * S],
        depth=DEPTH,
        num_heads=HEADS,
        num_llm_layers=0,
    ).eval()
    state = {rename_released_key(k).removeprefix("connector."): v for k, v in orig.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    n_params = sum(p.numel() for p in ours.parameters())

    rows = []
    for i, (batch, square) in enumerate(runs):
        sizes = _sizes(batch, square)
        feats = _tower_feats(batch, seed=i)
        sizes_t = torch.tensor(sizes)
        warmup = 1 if i == 0 else 0  # later runs reuse the warmed-up kernels and allocator
        with torch.inference_mode():
            res = _interleaved(
                {
                    "ours": lambda f=feats, s=sizes_t: ours(f, s).embeds,
                    "orig": lambda f=feats, s=sizes: torch.cat(orig.encode_images(f, s)[0]),
                },
                reps,
                warmup,
            )
        m_ours, m_orig = res["ours"], res["orig"]
        diff = (m_ours.output - m_orig.output).abs().max().item()
        rows.append(
            dict(
                batch=batch,
                sizes="all 336x336" if square else "mixed",
                tokens=m_ours.output.shape[0],
                ours=m_ours,
                orig=m_orig,
                diff=diff,
                scale=m_orig.output.abs().max().item(),
            )
        )
        del feats, m_ours, m_orig, res
        gc.collect()
    table = Table(
        title=f"SVA connector at released dims (V={V}, S={S}, D={DEPTH}, {HEADS} heads, towers "
        f"{'/'.join(map(str, TOKEN_LENS))} tok x {'/'.join(map(str, TOWER_DIMS))} ch, H={H_8B}, "
        f"{n_params / 1e6:.1f}M params), fp32 CPU"
    )
    for col in ("batch", "images", "image tokens", "ours img/s", "original img/s", "speed-up"):
        table.add_column(col, justify="right")
    for col in ("max |diff| (max |out|)", "peak mem ours", "peak mem original"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["batch"]),
            r["sizes"],
            str(r["tokens"]),
            f"{r['batch'] / r['ours'].median:.3f}",
            f"{r['batch'] / r['orig'].median:.3f}",
            f"{r['orig'].median / r['ours'].median:.2f}x",
            f"{r['diff']:.1e} ({r['scale']:.2f})",
            _mib(r["ours"].peak_mib),
            _mib(r["orig"].peak_mib),
        )
    console.print(table)
    return rows


# ------------------------------------------------------------------------------ part 2: whole model


class FeatureTower(VisionTower):
    """Identity tower for benchmarks: its "pixel values" are already its (B, N, C) output features."""

    family = "bench-features"

    def __init__(self, cfg: TowerConfig):
        super().__init__(cfg)
        # ``encode_images`` reads a tower's dtype from its first parameter; this one holds no data.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @property
    def hidden_size(self) -> int:
        return int(self.cfg.arch["hidden_size"])

    @property
    def native_grid(self) -> int:
        return self.cfg.grid

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values


if FeatureTower.family not in TOWERS:
    # Features need no normalisation: identity mean/std, black padding (never used: inputs are features).
    register_family(
        TowerFamily(
            id=FeatureTower.family,
            tower=FeatureTower,
            backends=("hf",),
            image_mean=(0.0, 0.0, 0.0),
            image_std=(1.0, 1.0, 1.0),
            pad_fill=(0, 0, 0),
        )
    )


def _build_models(k: int):
    """(ours, original, bare LLM) sharing one set of random weights."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from cambrian.models.configuration_cambrian import CambrianConfig
    from cambrian.models.modeling_cambrian import CambrianForCausalLM

    original = _reference()
    cfg = dict(_connector_cfg(SMALL_LLAMA["hidden_size"], k), **SMALL_LLAMA)
    cfg["tokenizer_model_max_length"] = 4096
    torch.manual_seed(0)
    llm = LlamaForCausalLM(original.llama_config_from_released(cfg, attn_implementation="sdpa"))
    orig = original.OriginalCambrian(cfg, llm, TOWER_DIMS, num_heads=HEADS).eval()

    towers = [
        TowerConfig(family=FeatureTower.family, token_len=n, image_size=1, arch={"hidden_size": c})
        for n, c in zip(TOKEN_LENS, TOWER_DIMS)
    ]
    config = CambrianConfig(
        text_config=dict(model_type="llama", tie_word_embeddings=False, **SMALL_LLAMA),
        vision_towers=[t.to_dict() for t in towers],
        mm_projector_type="sva",
        vision_hidden_size=V,
        image_token_len=S * S,
        num_query_group=1,
        query_num_list=[S * S],
        connector_depth=DEPTH,
        sva_num_heads=HEADS,
        num_of_vision_sampler_layers=k,
        start_of_vision_sampler_layers=0,
        stride_of_vision_sampler_layers=3,
        image_token_id=IMAGE_TOKEN_ID,
    )
    config.text_config._attn_implementation = "sdpa"
    ours = CambrianForCausalLM(config).eval()
    state = {rename_released_key(key): v for key, v in orig.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    bad = [m for m in missing if not m.startswith("vision_towers.")]
    if bad or unexpected:
        raise RuntimeError(f"weights do not map onto ours: missing {bad[:5]}, unexpected {unexpected[:5]}")

    bare = AutoModelForCausalLM.from_config(config.text_config).eval()
    bare.load_state_dict(ours.language_model.state_dict(), strict=True)
    return ours, orig, bare


def _prompt_inputs(sizes: list[tuple[int, int]], seed: int):
    """Ours: placeholder-expanded right-padded ids; the original's: one -200 at IMAGE_POSITION."""
    original = _reference()
    g = torch.Generator().manual_seed(seed)
    vocab = SMALL_LLAMA["vocab_size"]
    b = len(sizes)
    prefix = torch.randint(3, vocab - 1, (b, IMAGE_POSITION), generator=g)
    suffix = torch.randint(3, vocab - 1, (b, SUFFIX_LEN), generator=g)
    counts = image_token_counts(torch.tensor(sizes), S, unpad=True, newline=True).tolist()
    lengths = [IMAGE_POSITION + n + SUFFIX_LEN for n in counts]
    ids = torch.zeros(b, max(lengths), dtype=torch.long)
    mask = torch.zeros(b, max(lengths), dtype=torch.long)
    for i, n in enumerate(counts):
        row = [prefix[i], torch.full((n,), IMAGE_TOKEN_ID), suffix[i]]
        ids[i, : lengths[i]] = torch.cat(row)
        mask[i, : lengths[i]] = 1
    orig_ids = torch.cat([prefix, torch.full((b, 1), original.IMAGE_TOKEN_INDEX), suffix], dim=1)
    return ids, mask, orig_ids, lengths


def _decode_loop(model, first: torch.Tensor, mask: torch.Tensor, cache, steps: int) -> torch.Tensor:
    """Greedy decode ``steps`` tokens from ``first`` (B, 1) on top of ``cache`` (cropped back after)."""
    start = cache.get_seq_length()
    tok, out_tokens = first, []
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(input_ids=tok, attention_mask=mask, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        out_tokens.append(tok)
    cache.crop(start - cache.get_seq_length())  # a negative count removes the decoded tokens
    return torch.cat(out_tokens, dim=1)


def bench_model(reps: int, decode_steps: int, decode_reps: int, batch: int, k: int) -> None:
    t0 = time.perf_counter()
    ours, orig, bare = _build_models(k)
    console.print(
        f"[dim]built ours / original / bare LLM with shared weights in {time.perf_counter() - t0:.1f}s; "
        f"in-LLM SVA after decoder layers {ours.config.sva_layer_indices}[/dim]"
    )
    n_llm = sum(p.numel() for p in bare.parameters())
    n_conn = sum(p.numel() for p in ours.connector.parameters())
    table = Table(
        title=f"Cambrian with a small Llama (H={SMALL_LLAMA['hidden_size']}, "
        f"{SMALL_LLAMA['num_hidden_layers']} layers, {n_llm / 1e6:.0f}M params) + released-width SVA "
        f"({n_conn / 1e6:.0f}M params, K={k}), fp32 CPU"
    )
    table.add_column("measurement", no_wrap=True)
    for col in ("batch", "tokens", "ours tok/s", "baseline", "baseline tok/s", "ratio"):
        table.add_column(col, justify="right")
    for col in ("max |diff|", "peak mem ours", "peak mem baseline"):
        table.add_column(col, justify="right")

    with torch.inference_mode():
        # --- batch 1: prefill (last logits only) + greedy decode, against the bare LLM
        sizes = [MIXED_SIZES[0]]
        ids, mask, _, lengths = _prompt_inputs(sizes, seed=1)
        feats = _tower_feats(1, seed=1)
        img_sizes = torch.tensor(sizes)
        text_ids = torch.randint(
            3, SMALL_LLAMA["vocab_size"] - 1, ids.shape, generator=torch.Generator().manual_seed(3)
        )

        def ours_prefill():
            return ours(
                input_ids=ids, attention_mask=mask, pixel_values=feats, image_sizes=img_sizes, use_cache=True,
                logits_to_keep=1,
            )  # fmt: skip

        def bare_prefill():
            return bare(input_ids=text_ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

        pre = _interleaved({"ours": ours_prefill, "bare": bare_prefill}, reps, warmup=1)
        m_conn = measure(lambda: ours.connector(feats, img_sizes), reps, warmup=0)
        n_tok = lengths[0]
        table.add_row(
            "prefill (last logits)", "1", str(n_tok),
            f"{n_tok / pre['ours'].median:,.0f}", "bare LLM", f"{n_tok / pre['bare'].median:,.0f}",
            f"{pre['ours'].median / pre['bare'].median:.1f}x time", "-",
            _mib(pre["ours"].peak_mib), _mib(pre["bare"].peak_mib),
        )  # fmt: skip
        table.add_row(
            "  of which connector", "1", "1 image", f"{m_conn.median * 1e3:,.0f} ms", "", "",
            f"{m_conn.median / pre['ours'].median:.0%} of prefill", "-", _mib(m_conn.peak_mib), "",
        )  # fmt: skip

        c_ours, c_bare = pre["ours"].output.past_key_values, pre["bare"].output.past_key_values
        first_ours = pre["ours"].output.logits[:, -1:].argmax(-1)
        first_bare = pre["bare"].output.logits[:, -1:].argmax(-1)
        dec = _interleaved(
            {
                "ours": lambda: _decode_loop(ours, first_ours, mask, c_ours, decode_steps),
                "bare": lambda: _decode_loop(bare, first_bare, mask, c_bare, decode_steps),
            },
            reps=decode_reps,
            warmup=1,
        )
        dec_ratio = dec["ours"].median / dec["bare"].median
        ours_rate = decode_steps / dec["ours"].median
        bare_rate = decode_steps / dec["bare"].median
        # Decode steps must be the bare LLM's: on our prefill cache it must produce the same tokens.
        same = _decode_loop(bare, first_ours, mask, c_ours, decode_steps)
        agree = bool(torch.equal(same, dec["ours"].output))
        table.add_row(
            f"decode ({decode_steps} steps)", "1", f"ctx {n_tok}",
            f"{ours_rate:,.1f}", "bare LLM", f"{bare_rate:,.1f}",
            f"{dec_ratio - 1:+.1%} overhead",
            "same tokens" if agree else "TOKENS DIFFER",
            _mib(dec["ours"].peak_mib), _mib(dec["bare"].peak_mib),
        )  # fmt: skip
        del pre, feats
        gc.collect()

        # --- batch N, mixed aspect ratios: full prefill, ours against the original
        sizes = _sizes(batch, square=False)
        ids, mask, orig_ids, lengths = _prompt_inputs(sizes, seed=2)
        feats = _tower_feats(batch, seed=2)
        img_sizes = torch.tensor(sizes)
        # Warm both paths up on the first sample (the original has not run yet).
        orig(orig_ids[:1], None, [f[:1] for f in feats], sizes[:1])
        ours(
            input_ids=ids[:1],
            attention_mask=mask[:1],
            pixel_values=[f[:1] for f in feats],
            image_sizes=img_sizes[:1],
        )
        t_ours, t_orig = PartTimer(), PartTimer()
        t_ours.module(ours.connector, "connector")
        for layer in ours.connector.llm_layers:
            t_ours.module(layer, "in-LLM SVA")
        t_orig.method(orig, "encode_images", "connector")
        t_orig.method(orig, "apply_in_llm_sva", "in-LLM SVA")
        res = _interleaved(
            {
                "ours": lambda: (
                    ours(input_ids=ids, attention_mask=mask, pixel_values=feats, image_sizes=img_sizes).logits
                ),
                "orig": lambda: orig(orig_ids, None, feats, sizes),
            },
            reps,
            warmup=0,
        )
        lo, lr = res["ours"].output, res["orig"].output
        diff = max((lo[i, :n] - lr[i, :n]).abs().max().item() for i, n in enumerate(lengths))
        scale = max(lr[i, :n].abs().max().item() for i, n in enumerate(lengths))
        n_tok = sum(lengths)
        table.add_row(
            "prefill (all logits)", str(batch), f"{n_tok} (mixed)",
            f"{n_tok / res['ours'].median:,.0f}", "original", f"{n_tok / res['orig'].median:,.0f}",
            f"{res['orig'].median / res['ours'].median:.2f}x faster",
            f"{diff:.1e} (max |logit| {scale:.1f})",
            _mib(res["ours"].peak_mib), _mib(res["orig"].peak_mib),
        )  # fmt: skip
    console.print(table)

    n_runs = len(res["ours"].times)
    parts = Table(title=f"Where the batch-{batch} prefill time goes (mean over {n_runs} runs)")
    for col in ("part", "ours s", "original s", "original / ours"):
        parts.add_column(col, justify="right")
    rows = {}
    for key, m, timer in (("ours", res["ours"], t_ours), ("orig", res["orig"], t_orig)):
        total = statistics.mean(m.times)
        d = {k: v / n_runs for k, v in timer.totals.items()}
        d["LLM, splice, rest"] = total - sum(d.values())
        d["total"] = total
        rows[key] = d
        timer.remove()
    for part in ("connector", "in-LLM SVA", "LLM, splice, rest", "total"):
        a, b = rows["ours"].get(part, 0.0), rows["orig"].get(part, 0.0)
        parts.add_row(part, f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x" if a > 0 else "-")
    console.print(parts)
    speedup = res["orig"].median / res["ours"].median
    dec_over = dec_ratio - 1
    console.print(
        f"targets: batch-{batch} prefill >= 1.5x faster than the original with the same logits: "
        f"{speedup:.2f}x ({'met' if speedup >= 1.5 else 'NOT met'}); "
        f"decode overhead over the bare LLM <= 5%: {dec_over:+.1%} ({'met' if dec_over <= 0.05 else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and runs (about 2 minutes)")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else 3
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
        f", {'quick' if args.quick else 'full'} run (median of {reps}); times are wall clock"
    )
    t0 = time.perf_counter()
    runs = [(1, True), (8, False)] + ([] if args.quick else [(8, True)])
    bench_connector(runs, reps)
    bench_model(
        reps=reps, decode_steps=16 if args.quick else 32, decode_reps=5 if args.quick else 7, batch=8, k=2
    )
    console.print(f"[dim]total {time.perf_counter() - t0:.0f}s[/dim]")


if __name__ == "__main__":
    main()
