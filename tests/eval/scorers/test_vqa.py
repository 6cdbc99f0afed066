"""The EvalAI/MMF VQA answer normaliser and the 10-annotator VQA accuracy (docs/eval-protocols.md s.4.2, 4.3, 7.1)."""

from __future__ import annotations

import pytest

from cambrian.eval.scorers.vqa import normalize_answer, vqa_accuracy

# docs/eval-protocols.md s.4.2, "verified by running the original processor".
NORMALISER_EXAMPLES = [
    ("The Cat.", "cat"),
    ("Two dogs!", "2 dogs"),
    ("yes, it is", "yes it is"),
    ("hello-world", "hello world"),
    ("a/b", "b"),
    ("1,000", "1000"),
    ("dont", "don't"),
    ("none", "0"),
    ("it's", "it 's"),
    ("mr. smith", "mr smith"),
    ("3.5", "3.5"),
    ("10:30", "10:30"),
]


@pytest.mark.parametrize("raw,expected", NORMALISER_EXAMPLES, ids=[r for r, _ in NORMALISER_EXAMPLES])
@pytest.mark.parametrize("rules", ["legacy", "recommended"])
def test_normaliser_examples(raw, expected, rules):
    assert normalize_answer(raw, rules) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("5.", "5"),  # the malformed look-behind: a period after a digit goes too
        ("v1.2.", "v1.2"),  # ... but one followed by a digit stays
        ("red\nblue\tsky", "red blue sky"),  # newlines and tabs become spaces
        ("what?", "what"),  # '?' is deleted in step 1
        ("hello-world -x", "helloworld x"),  # a '-' touching a space: every '-' is deleted
        ("(b)", "b"),  # no space next to the brackets: each becomes a space
        ("1,5-2", "15 2"),  # the digit-comma-digit escape never fires (commas are already gone)
        ("a one", "1"),  # number words map before articles are dropped
        ("an apple", "apple"),
        ("somebody'd", "somebodyd"),  # the contraction table's own typo
        ("Im", "im"),  # capitalised keys of the table never match (words are lower-cased)
        ("whats up", "what's up"),
        ("cat's", "cat 's"),
        ("$5 & 10%", "$5 & 10%"),  # characters outside the punctuation list are kept
        ("", ""),
        ("   ", ""),
    ],
)
def test_normaliser_rules_and_quirks(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_cap_is_32_in_legacy_and_lifted_in_recommended():
    raw = "x." * 40  # 40 periods, none followed by a digit
    assert normalize_answer(raw, "legacy") == "x" * 32 + "x." * 8
    assert normalize_answer(raw, "recommended") == "x" * 40
    assert normalize_answer("x." * 32, "legacy") == "x" * 32  # exactly 32: no difference


# docs/eval-protocols.md s.7.1: prediction, GT answers, score.
GOLDEN_7_1 = [
    ("cat", ["cat"] * 10, 1.0),
    ("cat", ["cat"] * 4 + ["dog"] * 6, 1.0),
    ("cat", ["cat"] * 3 + ["dog"] * 7, 0.9),
    ("cat", ["cat"] * 2 + ["dog"] * 8, 0.6),
    ("cat", ["cat"] * 1 + ["dog"] * 9, 0.3),
    ("bird", ["cat"] * 4 + ["dog"] * 6, 0.0),
    ("The Cat.", ["cat"] * 3 + ["dog"] * 7, 0.9),
    ("two", ["2"] * 3 + ["3"] * 7, 0.9),
    ("a dog", ["dog"] * 2 + ["cat"] * 8, 0.6),
    ("dont", ["don't"] * 10, 1.0),
    ("Unanswerable", ["unanswerable"] * 5 + ["red"] * 5, 1.0),
]


@pytest.mark.parametrize(
    "pred,gts,expected", GOLDEN_7_1, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(GOLDEN_7_1)]
)
def test_golden_vqa_accuracy(pred, gts, expected):
    assert vqa_accuracy(pred, gts) == pytest.approx(expected)
    assert vqa_accuracy(pred, gts, "recommended") == pytest.approx(expected)


def test_gt_order_does_not_matter_and_sum_is_the_originals():
    # (3 * 2/3 + 7 * 1) / 10 summed in annotator order: exactly the original's float.
    assert vqa_accuracy("cat", ["dog"] * 7 + ["cat"] * 3) == vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7)
    assert (
        vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7)
        == (2 / 3 + 2 / 3 + 2 / 3 + 1 + 1 + 1 + 1 + 1 + 1 + 1) / 10
    )


def test_gt_answers_are_normalised_too():
    assert vqa_accuracy("2", ["Two."] * 4 + ["three"] * 6) == 1.0


def test_empty_prediction_is_wrong_not_a_crash():
    assert vqa_accuracy("", ["cat"] * 10) == 0.0
    assert vqa_accuracy("  \n", ["cat"] * 10) == 0.0


@pytest.mark.parametrize("n", [0, 9, 11])
def test_exactly_ten_gt_answers_are_required(n):
    with pytest.raises(ValueError, match="exactly 10 GT answers, got " + str(n)):
        vqa_accuracy("cat", ["cat"] * n)
