"""Grouped scorers: MME acc/acc+ (legacy state machine and explicit images), MMVP pairs, MMBench circular."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from cambrian.eval.benchmark import ScoreError
from cambrian.eval.scorers.grouped import (
    MME_COGNITION,
    MME_PERCEPTION,
    circular_accuracy,
    is_scored_gt,
    mmbench_image_hash,
    mme_grouped,
    mme_legacy,
    mme_summary,
    mmvp_pairs_by_id,
    mmvp_pairs_by_line,
    murmur3_32,
)

Y, N = True, False


# ---------------------------------------------------------------------------------------------- MME
def test_mme_worked_example_7_5_legacy_and_grouped():
    # existence: image 1 both right, image 2 one wrong; commonsense_reasoning: image 3 both right.
    rows = [("existence", 1, Y), ("existence", 1, Y), ("existence", 2, Y), ("existence", 2, N),
            ("commonsense_reasoning", 3, Y), ("commonsense_reasoning", 3, Y)]  # fmt: skip
    for tallies in (mme_legacy([(c, ok) for c, _, ok in rows]), mme_grouped(rows)):
        s = mme_summary(tallies)
        assert s["by_subtask"]["existence"] == {"n": 4, "acc": 75.0, "acc_plus": 50.0, "score": 125.0}
        assert s["by_subtask"]["commonsense_reasoning"]["score"] == 200.0
        assert (s["Perception"], s["Cognition"], s["total_score"]) == (125.0, 200.0, 325.0)
        assert s["accuracy"] == pytest.approx(500 / 6)
        assert s["Perception"] / 20 == 6.25  # the paper's averaging scale


def test_mme_subtask_lists():
    assert len(MME_PERCEPTION) == 10 and len(MME_COGNITION) == 4
    assert "OCR" in MME_PERCEPTION and "code_reasoning" in MME_COGNITION


def test_mme_legacy_pending_at_end_counts_one():
    # count: line 0 wrong (even, nothing), line 1 right (odd, no pending: nothing), line 2 right (even:
    # pending) -> acc+ = 2*0 + 1 = 1 of 3 rows.
    t = mme_legacy([("count", N), ("count", Y), ("count", Y)])["count"]
    assert (t.size, t.correct) == (3, 2)
    assert t.plus == pytest.approx(100 / 3)
    # explicit images (rows 0-1, row 2): image 0 has a wrong row, image 1 (one row) is all right -> 50 %
    assert mme_grouped([("count", 0, N), ("count", 0, Y), ("count", 1, Y)])["count"].plus == 50.0
    # three right rows: one closed pair + pending -> 3/3
    assert mme_legacy([("count", Y)] * 3)["count"].plus == 100.0


def test_mme_legacy_even_wrong_keeps_pending_and_categories_interleave():
    # line 0 existence right (pending); line 1 count right (odd, count has none pending: nothing);
    # line 2 existence wrong (even: pending stays); line 3 existence right (odd + pending: closed).
    tallies = mme_legacy([("existence", Y), ("count", Y), ("existence", N), ("existence", Y)])
    assert tallies["existence"].plus == pytest.approx(200 / 3)  # 2 * 1 closed / 3 rows
    assert tallies["existence"].acc == pytest.approx(200 / 3)
    assert tallies["count"].plus == 0.0
    assert mme_summary(tallies)["Perception"] == pytest.approx(400 / 3 + 100)


def test_mme_legacy_odd_wrong_clears_pending_and_odd_right_without_pending_is_nothing():
    # line 0 right (pending), line 1 wrong (odd: cleared), line 2 wrong, line 3 right (odd, none pending)
    assert mme_legacy([("color", Y), ("color", N), ("color", N), ("color", Y)])["color"].plus == 0.0


def test_mme_parity_shift_from_an_odd_category_vs_explicit_images():
    # existence has 1 row (line 0: pending -> 1/1); count's two right rows sit on lines 1 and 2, so its
    # pair never closes: line 1 odd without pending -> nothing, line 2 even -> pending -> acc+ 1/2.
    legacy = mme_legacy([("existence", Y), ("count", Y), ("count", Y)])
    assert legacy["existence"].plus == 100.0
    assert legacy["count"].plus == 50.0
    grouped = mme_grouped([("existence", "e", Y), ("count", "c", Y), ("count", "c", Y)])
    assert grouped["count"].plus == 100.0


def test_mme_grouped_is_order_independent():
    rows = [("scene", i // 2, ok) for i, ok in enumerate([Y, Y, Y, N, N, N, Y, Y])]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert mme_grouped(shuffled)["scene"] == mme_grouped(rows)["scene"]
    assert mme_grouped(rows)["scene"].plus == 50.0  # images 0 and 3 of 4


def test_mme_unknown_category_is_a_score_error_listing_the_valid_ones():
    with pytest.raises(ScoreError, match=r"'Existence'.*existence, count, .*code_reasoning"):
        mme_legacy([("Existence", Y)])
    with pytest.raises(ScoreError, match="'foo'"):
        mme_grouped([("foo", 0, Y)])


def test_mme_summary_of_nothing():
    assert mme_summary({}) == {"Perception": 0.0, "Cognition": 0.0, "total_score": 0.0, "accuracy": 0.0,
                               "by_subtask": {}}  # fmt: skip


# --------------------------------------------------------------------------------------------- MMVP
def test_mmvp_worked_example_7_4():
    out = mmvp_pairs_by_line([Y, Y, Y, N, N, Y])
    assert out["accuracy"] == pytest.approx(100 / 3)
    assert (out["credit"], out["rows"], out["pairs"], out["pairs_correct"]) == (2, 6, 3, 1)
    assert mmvp_pairs_by_id(enumerate([Y, Y, Y, N, N, Y]))["accuracy"] == pytest.approx(100 / 3)


def test_mmvp_odd_last_line_credits_one_if_right():
    assert mmvp_pairs_by_line([Y, Y, N, Y, Y])["accuracy"] == 60.0  # (2 + 1) / 5
    assert mmvp_pairs_by_line([Y, Y, N, Y, N])["accuracy"] == 40.0  # 2 / 5
    assert mmvp_pairs_by_line([Y])["accuracy"] == 100.0
    assert mmvp_pairs_by_line([])["accuracy"] == 0.0


def test_mmvp_lines_versus_ids_on_an_unordered_file():
    # By id: q0 right, q1 wrong, q2 wrong, q3 right -> no pair right. The file lists q0, q3, q1, q2.
    rows = [(0, Y), (3, Y), (1, N), (2, N)]
    assert mmvp_pairs_by_line([ok for _, ok in rows])["accuracy"] == 50.0  # lines (q0, q3) "pair"
    assert mmvp_pairs_by_id(rows)["accuracy"] == 0.0
    assert mmvp_pairs_by_id(sorted(rows)) == mmvp_pairs_by_id(rows)


def test_mmvp_pairs_by_id_with_one_based_ids_and_a_missing_partner():
    # ids 1-2 and 3-4 pair when first_id=1; id 5 has no partner and is judged alone.
    out = mmvp_pairs_by_id([(1, Y), (2, Y), (3, Y), (4, N), (5, Y)], first_id=1)
    assert (out["pairs"], out["pairs_correct"], out["rows"]) == (3, 2, 5)
    assert out["accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(ScoreError, match="'7'"):
        mmvp_pairs_by_id([("7", Y)])


# ------------------------------------------------------------------------------------------ MMBench
def test_circular_worked_example_7_7():
    rows = [("cat", "Q1", Y)] * 4 + [("cat", "Q2", Y), ("cat", "Q2", N)]
    out = circular_accuracy(rows)
    assert out["circular_accuracy"] == 50.0
    assert out["accuracy"] == pytest.approx(500 / 6)
    assert (out["n"], out["groups"], out["groups_correct"]) == (6, 2, 1)
    assert out["by_category"]["cat"]["circular_accuracy"] == 50.0


def test_circular_same_source_in_two_categories_is_two_groups_and_order_is_irrelevant():
    rows = [("a", "S", Y), ("b", "S", N), ("a", "S", Y), ("b", "T", Y)]
    out = circular_accuracy(rows)
    assert (out["groups"], out["groups_correct"]) == (3, 2)  # (a,S) right, (b,S) wrong, (b,T) right
    assert out["circular_accuracy"] == pytest.approx(200 / 3)
    assert out["by_category"]["b"] == {"n": 2, "accuracy": 50.0, "groups": 2, "groups_correct": 1,
                                       "circular_accuracy": 50.0}  # fmt: skip
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert circular_accuracy(shuffled) == out
    assert circular_accuracy([])["circular_accuracy"] == 0.0


def test_rows_without_gt_are_not_scored():
    assert [is_scored_gt(g) for g in ("A", "", None, "nan")] == [True, False, False, True]


# ---------------------------------------------------------------------------------- MurmurHash3 x86_32
# Values of mmh3.hash(data) (seed 0, signed), the function the original eval called.
MURMUR_VECTORS = [
    (b"", 0),
    (b"a", 1009084850),
    (b"ab", -1681926305),
    (b"abc", -1277324294),
    (b"abcd", 1139631978),
    (b"hello", 613153351),
    (b"foo", -156908512),
    (b"The quick brown fox jumps over the lazy dog", 776992547),
    (bytes(range(256)) * 3, 820090273),
    (b"\xff" * 7, 18685351),
]


@pytest.mark.parametrize(("data", "expected"), MURMUR_VECTORS)
def test_murmur3_32_matches_mmh3(data, expected):
    assert murmur3_32(data) == expected


def test_hex_format_of_negative_hashes_keeps_the_sign():
    assert format(murmur3_32(b"foo"), "08x") == "-95a3be0"  # 7 digits: the sign counts towards the width


def _flat(value: int) -> Image.Image:
    arr = np.full((256, 256, 3), value, dtype=np.uint8)
    arr[..., 1] = 255 - value
    return Image.fromarray(arr)


def test_mmbench_image_hash_of_256px_images():
    # Already 256x256: the resize is a copy, so these pin the hash and its format (values from mmh3).
    assert mmbench_image_hash(_flat(0)) == "136a0328"
    assert mmbench_image_hash(_flat(1)) == "-e4ed991"  # negative: '-' + 7 hex digits
    assert mmbench_image_hash(_flat(5)) == "00d0ae5a"  # zero-padded to 8


def test_mmbench_image_hash_resizes_with_pillows_default_filter():
    arr = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    image = Image.fromarray(arr)
    # the original called image.resize((256, 256)) without a filter argument
    assert mmbench_image_hash(image) == format(murmur3_32(image.resize((256, 256)).tobytes()), "08x")
    assert mmbench_image_hash(image.convert("RGBA")) == mmbench_image_hash(image)
