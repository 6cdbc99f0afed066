"""ANLS (tau 0.5) and the Levenshtein distance behind it (docs/eval-protocols.md s.4.4, 7.2)."""

from __future__ import annotations

import random

import pytest

from cambrian.eval.scorers.anls import anls, levenshtein

# docs/eval-protocols.md s.7.2: prediction, GT answers, score.
GOLDEN_7_2 = [
    ("hello", ["hello"], 1.0),
    ("Hello ", ["hello"], 1.0),  # case and surrounding space are normalised away
    ("hallo", ["hello"], 0.8),  # 1 edit / 5
    ("abxy", ["abcd"], 0.5),  # 1 - 2/4 = 0.5 is kept (only s < 0.5 drops to 0)
    ("axyz", ["abcd"], 0.0),  # 1 - 3/4 = 0.25 < 0.5
    ("1995.", ["1995", "in 1995"], 0.8),  # best GT: 1 - 1/5
    ("Jan 5", ["january 5", "jan. 5"], 1 - 1 / 6),  # 0.8333 against "jan. 5"
    ("", ["abc"], 0.0),
]


@pytest.mark.parametrize(
    "pred,gts,expected", GOLDEN_7_2, ids=[f"{i}-{p!r}" for i, (p, _, _) in enumerate(GOLDEN_7_2)]
)
@pytest.mark.parametrize("rules", ["legacy", "recommended"])
def test_golden_anls(pred, gts, expected, rules):
    assert anls(pred, gts, rules) == pytest.approx(expected)


def test_golden_dataset_mean_of_the_first_four_rows():
    scores = [anls(p, g) for p, g, _ in GOLDEN_7_2[:4]]
    assert 100 * sum(scores) / len(scores) == pytest.approx(82.5)


def test_legacy_divides_by_raw_lengths_recommended_by_normalised_ones():
    # "  hallo  " normalises to "hallo": 1 edit from "hello". Legacy: 1/9 (the raw prediction has 9
    # characters); recommended: 1/5.
    assert anls("  hallo  ", ["hello"], "legacy") == pytest.approx(1 - 1 / 9)
    assert anls("  hallo  ", ["hello"], "recommended") == pytest.approx(0.8)
    # Internal whitespace is collapsed for the distance: "new  york" == "new york".
    assert anls("new  york", ["New York"], "legacy") == 1.0
    # Legacy takes len(x.upper()): "ß" upper-cases to "SS", so the raw length is 2, not 1.
    assert anls("ß", ["s"], "legacy") == pytest.approx(0.5)
    assert anls("ß", ["s"], "recommended") == 0.0


def test_best_gt_wins_and_threshold_is_configurable():
    assert anls("cat", ["dog", "cats", "cat"]) == 1.0
    assert anls("abxy", ["abcd"], threshold=0.6) == 0.0
    assert anls("abcx", ["abcd"], threshold=0.6) == pytest.approx(0.75)


def test_empty_strings():
    assert anls("", [""]) == 1.0  # both empty: distance 0 over length 0 counts as a match
    assert anls("   ", ["abc"]) == 0.0
    with pytest.raises(ValueError, match="at least one GT answer"):
        anls("abc", [])


@pytest.mark.parametrize(
    "a,b,d",
    [
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("abc", "abc", 0),
        ("ab", "ba", 2),
        ("a" * 100, "b" * 100, 100),  # longer than one machine word of bits
        ("ab" * 50, "ba" * 50, 2),
        ("x" + "y" * 70 + "z", "y" * 70, 2),
    ],
)
def test_levenshtein_known_values(a, b, d):
    assert levenshtein(a, b) == d
    assert levenshtein(b, a) == d


def _dp(a: str, b: str) -> int:
    # The textbook full-table DP, as an independent reference.
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
    return table[-1][-1]


def test_levenshtein_matches_the_textbook_dp_on_random_strings():
    rng = random.Random(0)
    for n in range(400):
        alphabet = "ab" if n % 2 else "abcde "
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80 if n % 10 == 0 else 12)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80 if n % 10 == 0 else 12)))
        assert levenshtein(a, b) == _dp(a, b), (a, b)
