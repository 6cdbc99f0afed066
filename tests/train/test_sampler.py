"""The global-batch sampler: same global batches on any number of processes, resumable, modality grouping."""

from __future__ import annotations

import numpy as np
import pytest

from cambrian.train.sampler import GlobalBatchSampler


def _rank_batches(n, p, a, w, step, **kw):
    return [GlobalBatchSampler(n, p, a, w, r, seed=3, **kw).rank_micro_batches(step) for r in range(w)]


@pytest.mark.parametrize("p, a, w", [(4, 2, 1), (2, 2, 2), (1, 4, 2), (2, 1, 4)])
def test_ranks_split_the_same_global_batch(p, a, w):
    n = 50
    ref = GlobalBatchSampler(n, 8, 1, 1, 0, seed=3)
    for step in range(ref.steps_per_epoch * 2):  # crosses an epoch boundary
        parts = _rank_batches(n, p, a, w, step)
        flat = sorted(i for rank in parts for mb in rank for i in mb)
        assert flat == sorted(ref.global_batch_indices(step).tolist())
        assert all(len(mb) == p for rank in parts for mb in rank)


def test_epochs_reshuffle_and_cover_rows_once():
    s = GlobalBatchSampler(64, 4, 1, 1, 0, seed=0)
    e0, e1 = s.epoch_order(0), s.epoch_order(1)
    assert sorted(e0.tolist()) == list(range(64)) and not np.array_equal(e0, e1)


def test_resume_continues_the_same_sequence():
    full = GlobalBatchSampler(40, 2, 2, 1, 0, seed=1)
    full.set_range(0, 15)
    resumed = GlobalBatchSampler(40, 2, 2, 1, 0, seed=1)
    resumed.set_range(6, 15)
    assert list(full)[6 * 2 :] == list(resumed) and len(resumed) == 18


def test_grouping_by_modality_and_length():
    rng = np.random.default_rng(0)
    n = 200
    has_image = rng.random(n) < 0.6
    lengths = rng.integers(10, 500, n)
    s = GlobalBatchSampler(
        n, 4, 1, 2, 0, seed=0, lengths=lengths, has_image=has_image, group_by_modality_length=True
    )
    mixed = 0
    for step in range(s.steps_per_epoch):
        batch = s.global_batch_indices(step)
        kinds = set(has_image[batch].tolist())
        if len(kinds) == 1:
            assert list(lengths[batch]) == sorted(lengths[batch], reverse=True)
        else:
            mixed += 1
    assert mixed <= 1  # only the leftover of both modalities mixes
    assert len(set(s.epoch_order(0).tolist())) == s.steps_per_epoch * 8


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one global batch of 16"):
        GlobalBatchSampler(10, 4, 2, 2, 0)
