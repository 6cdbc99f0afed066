"""Per-request sampling inside one batched ``generate``: temperature, top-p and seed per row.

transformers applies one sampling setting to a whole batch and draws from the global RNG, so a request's
sample would depend on what it was batched with. ``RowSampler`` is a logits processor that picks each
sampling row's token itself (Gumbel-max over its own temperature/top-p distribution) and leaves a
one-hot score, so ``generate`` runs greedy and greedy rows are untouched (their answer is the same
alone or batched). The Gumbel noise comes from a counter-based hash of (seed, step, token id): a seeded
request gives the same tokens whatever else is in the batch, with no per-row generator loop.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow (16-bit halves)."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * (c & 0xFFFF)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (bijective, good avalanche): murmur3-style xor-shift-multiply."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def gumbel_noise(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(B, vocab) float32 standard Gumbel noise, a pure function of (seed, step, token id).

    ``seeds`` (B,) int64 (any value; its low 64 bits are used).
    """
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    key = _mix32(_mix32(_mix32(lo) ^ hi) ^ (step & _M32))  # (B,)
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    h = _mix32(key[:, None] ^ ids[None, :])  # (B, V) in [0, 2**32)
    u = ((h >> 8).to(torch.float64) + 0.5) / float(1 << 24)  # (0, 1): 24 bits, never 0 or 1
    return (-torch.log(-torch.log(u))).float()


class RowSampler(LogitsProcessor):
    """Samples rows with ``temperature > 0`` (top-p, seeded); returns greedy rows' scores unchanged.

    Args:
        temperature, top_p: (B,) float tensors; a row with temperature 0 is greedy.
        seeds: (B,) int64 tensor.
        prompt_len: padded prompt length of the batch (the step count starts after it).
    """

    def __init__(self, temperature: torch.Tensor, top_p: torch.Tensor, seeds: torch.Tensor, prompt_len: int):
        self.temperature, self.top_p, self.seeds = temperature, top_p, seeds
        self.sample = temperature > 0  # (B,)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not bool(self.sample.any()):
            return scores
        dev = scores.device
        step = input_ids.shape[1] - self.prompt_len
        logits = scores / self.temperature.to(dev).clamp_min(1e-6)[:, None]  # (B, V)
        # top-p: keep the smallest set of most likely tokens whose mass reaches top_p (always >= 1 token).
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = (probs.cumsum(dim=-1) - probs) >= self.top_p.to(dev)[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        choice = (logits + gumbel_noise(self.seeds.to(dev), step, logits.shape[-1])).argmax(dim=-1)  # (B,)
        onehot = torch.full_like(scores, float("-inf")).scatter(-1, choice[:, None], 0.0)
        return torch.where(self.sample.to(dev)[:, None], onehot, scores)
