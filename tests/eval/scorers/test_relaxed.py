"""Relaxed accuracy: ChartQA's rule, the MathVista/MMMU swapped variant, the recommended fixes, and the
``float()`` quirks the legacy scorers inherit (docs/eval-protocols.md s.4.5 and s.7.3, docs/eval-legacy-scorers.md)."""

from __future__ import annotations

import pytest

from cambrian.eval.scorers.relaxed import (
    chartqa_correct,
    mathvista_mmmu_correct,
    parse_number,
    within_tolerance,
)

# docs/eval-protocols.md s.7.3, every row: (GT, prediction, ChartQA, MathVista/MMMU legacy).
GOLDEN = [
    ("25", "26", True, True),
    ("25", "27", False, False),
    ("100", "105", True, True),  # ChartQA boundary: 5 <= 5
    ("100", "95", True, False),  # swapped: 5 > 0.05 * 95 = 4.75
    ("40", "38", True, False),  # swapped: 2 > 1.9
    ("0", "0.0", True, True),
    ("0", "0.01", False, False),
    ("-10", "-10.4", True, True),
    ("Yes", "yes", True, True),  # string equality after lower-casing
    ("12%", "12", False, False),  # "12%" is not numeric and the strings differ
    ("1,000", "1000", False, False),
]


@pytest.mark.parametrize(("gt", "pred", "chartqa", "_"), GOLDEN)
def test_chartqa_golden_rows(gt, pred, chartqa, _):
    assert chartqa_correct(pred, gt) is chartqa


@pytest.mark.parametrize(("gt", "pred", "_", "swapped"), GOLDEN)
def test_mathvista_mmmu_legacy_golden_rows(gt, pred, _, swapped):
    # The benchmarks lower-case before calling the shared rule.
    assert mathvista_mmmu_correct(pred.lower(), gt.lower()) is swapped


def test_recommended_chartqa_strips_percent_and_thousands_commas():
    assert chartqa_correct("12", "12%", "recommended")
    assert chartqa_correct("12.5%", "12.5", "recommended")
    assert chartqa_correct("1000", "1,000", "recommended")
    assert chartqa_correct("1,234,567", "1234567", "recommended")
    assert not chartqa_correct("15", "1,5", "recommended")  # not a thousands comma: strings differ
    assert not chartqa_correct("12", "12%%", "recommended")  # only one trailing % goes
    # every legacy golden row that already agreed stays the same
    for gt, pred, chartqa, _ in GOLDEN[:-2]:
        assert chartqa_correct(pred, gt, "recommended") is chartqa


def test_recommended_mathvista_mmmu_tolerance_is_relative_to_the_gt():
    assert mathvista_mmmu_correct("95", "100", "recommended")
    assert mathvista_mmmu_correct("38", "40", "recommended")
    assert not mathvista_mmmu_correct("105.2", "100", "recommended")  # 5.2 > 5 (legacy: 5.2 <= 5.26)
    assert mathvista_mmmu_correct("105.2", "100")
    assert not mathvista_mmmu_correct("inf", "42", "recommended")
    assert not mathvista_mmmu_correct("-inf", "42", "recommended")


def test_tolerance_is_inclusive_in_doubles():
    # 12 * 0.05 == 0.6000000000000001 and 12.6 - 12 == 0.5999999999999996: passes, as in the original.
    assert 12 * 0.05 == 0.6000000000000001
    assert within_tolerance(12.6, 12.0)
    assert chartqa_correct("12.6", "12")
    assert chartqa_correct("11.4", "12")
    assert not chartqa_correct("12.61", "12")
    assert mathvista_mmmu_correct("12.6", "12")  # 0.6 <= 0.63 (relative to the prediction)


def test_float_semantics_of_the_number_parser():
    assert parse_number(" 12 ") == 12.0
    assert parse_number("+7") == 7.0
    assert parse_number("1_000") == 1000.0
    assert parse_number("1e2") == 100.0
    assert parse_number("١٢") == 12.0  # Arabic-Indic digits
    assert parse_number("１２") == 12.0  # full-width digits
    assert parse_number("Infinity") == float("inf")
    assert parse_number("-inf") == float("-inf")
    assert parse_number("nan") != parse_number("nan")  # a NaN
    for text in ("12%", "1,000", "$5", "", "1__000", "twelve", "1 000"):
        assert parse_number(text) is None, text


def test_chartqa_inherits_float_quirks():
    assert chartqa_correct("1_000", "1000")
    assert chartqa_correct("1e2", "100")
    assert chartqa_correct(" 12", "12")
    assert chartqa_correct("١٢", "12")
    assert chartqa_correct("１２", "12")
    assert chartqa_correct("-0", "0")  # GT 0: only an exact zero passes
    # NaN is numeric but never within tolerance; the string test is not reached, so even nan/nan fails.
    assert not chartqa_correct("nan", "nan")
    assert not chartqa_correct("nan", "5")
    assert not chartqa_correct("inf", "42")  # |inf - 42| = inf > 2.1


def test_swapped_rule_inf_quirk_and_exact_match_first():
    # Tolerance |p| * 0.05 is infinite for p = +-inf: every numeric GT passes.
    for pred in ("inf", "-inf", "infinity"):
        assert mathvista_mmmu_correct(pred, "42"), pred
    assert mathvista_mmmu_correct("nan", "nan")  # equal strings win before any parsing
    assert not mathvista_mmmu_correct("nan", "3")
    assert mathvista_mmmu_correct("1_000", "1000")
    assert mathvista_mmmu_correct("1e2", "100")
    assert mathvista_mmmu_correct("١٢", "12")
    assert not mathvista_mmmu_correct("", "12")
    assert not mathvista_mmmu_correct("a", "b")
