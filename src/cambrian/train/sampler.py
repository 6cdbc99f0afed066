"""Deterministic, resumable order of training samples, split into global batches and per-rank micro-batches.

The order is a pure function of (seed, epoch), so it is the same on 1 or N processes and a resumed
run continues at the exact sample where it stopped (the position is just the optimizer step).
A global batch of G = P x A x W samples (P per device, A accumulation steps, W processes) is cut so
that micro-batch a of rank r holds samples ``[(a*W + r)*P, (a*W + r + 1)*P)`` of the global batch:
every process sees a disjoint share and their union is the global batch, whatever W is.

With ``group_by_modality_length`` (LLaVA's sampler, stage 2) each global batch holds one modality
(image rows or text-only rows) and samples of similar length, so padding and wasted vision work stay
small; the megabatches are then shuffled so modalities and lengths are interleaved over the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class GlobalBatchSampler:
    """Yields this rank's micro-batches (lists of row indices), starting at a given optimizer step."""

    def __init__(
        self,
        num_rows: int,
        per_device_batch: int,
        grad_accum: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        lengths: np.ndarray | None = None,
        has_image: np.ndarray | None = None,
        group_by_modality_length: bool = False,
    ):
        self.num_rows = num_rows
        self.per_device_batch, self.grad_accum = per_device_batch, grad_accum
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.global_batch = per_device_batch * grad_accum * world_size
        if num_rows < self.global_batch:
            raise ValueError(
                f"the data has {num_rows} rows, fewer than one global batch of {self.global_batch} "
                f"(per_device_batch {per_device_batch} x grad_accum {grad_accum} x processes {world_size})"
            )
        self.group = group_by_modality_length
        if self.group and (lengths is None or has_image is None):
            raise ValueError("group_by_modality_length needs per-row lengths and has_image flags")
        self.lengths, self.has_image = lengths, has_image
        self.start_step = 0
        self.num_steps: int | None = None
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Whole global batches per epoch (the incomplete last one is dropped)."""
        return self.num_rows // self.global_batch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """(steps_per_epoch * G,) row indices of ``epoch`` in training order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.num_rows)
        if self.group:
            perm = self._grouped(perm, rng)
        order = perm[: self.steps_per_epoch * self.global_batch]
        self._epoch_cache = (epoch, order)
        return order

    def _grouped(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = self.global_batch
        image = self.has_image[perm].astype(bool)
        chunks, leftovers = [], []
        for stream in (perm[image], perm[~image]):
            full = len(stream) // g * g
            if full:
                mega = stream[:full].reshape(-1, g)
                # Longest first inside each megabatch: per-rank micro-batches get similar lengths.
                by_len = np.argsort(-np.asarray(self.lengths)[mega], axis=1, kind="stable")
                chunks.append(np.take_along_axis(mega, by_len, axis=1))
            leftovers.append(stream[full:])
        rest = np.concatenate(leftovers)
        if len(rest) >= g:  # the two remainders together make mixed batches
            full = len(rest) // g * g
            chunks.append(rest[:full].reshape(-1, g))
            rest = rest[full:]
        mega = np.concatenate(chunks) if chunks else np.empty((0, g), dtype=perm.dtype)
        mega = mega[rng.permutation(len(mega))]
        return np.concatenate([mega.reshape(-1), rest])

    def global_batch_indices(self, step: int) -> np.ndarray:
        """(G,) rows of global batch number ``step`` (counting across epochs)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[k * self.global_batch : (k + 1) * self.global_batch]

    def rank_micro_batches(self, step: int) -> list[list[int]]:
        """The ``grad_accum`` micro-batches of this rank for optimizer step ``step``."""
        batch = self.global_batch_indices(step)
        p, w = self.per_device_batch, self.world_size
        return [
            batch[(a * w + self.rank) * p : (a * w + self.rank + 1) * p].tolist()
            for a in range(self.grad_accum)
        ]

    def set_range(self, start_step: int, num_steps: int) -> None:
        """Iterate optimizer steps ``[start_step, num_steps)`` (resume sets the start)."""
        self.start_step, self.num_steps = start_step, num_steps

    def __iter__(self) -> Iterator[list[int]]:
        if self.num_steps is None:
            raise RuntimeError("call set_range(start_step, num_steps) before iterating")
        for step in range(self.start_step, self.num_steps):
            yield from self.rank_micro_batches(step)

    def __len__(self) -> int:
        return max(0, (self.num_steps or 0) - self.start_step) * self.grad_accum
