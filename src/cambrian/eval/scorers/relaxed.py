"""Relaxed numeric accuracy: ChartQA's rule and the "swapped" variant of the MathVista and MMMU scorers.

Both compare a prediction with a ground truth (GT) string. When both parse as numbers they are compared
with a 5 % tolerance, otherwise as strings (docs/eval-protocols.md s.4.5, docs/eval-legacy-scorers.md):

* **ChartQA** (legacy): lower-case both; if both parse, correct iff ``|p - g| <= |g| * 0.05`` (relative
  to the GT, inclusive, in doubles: g=12, p=12.6 passes since ``12 * 0.05 == 0.6000000000000001``);
  else correct iff the strings are equal. ``"12%"``, ``"1,000"``, ``"$5"`` do not parse. Recommended:
  drop a trailing ``%`` and thousands commas before parsing (``"12%"`` == ``"12"``, ``"1,000"`` == ``"1000"``).
* **MathVista / MMMU** (legacy): equal strings are correct; else if both parse, correct iff
  ``|g - p| <= |p| * 0.05``: the original passes its arguments swapped, so the tolerance is relative to
  the **prediction** (g=100, p=95 is wrong; ``inf``/``-inf`` pass for every numeric GT). Recommended:
  the tolerance relative to the GT, as ChartQA.

Numbers are read with Python's ``float()`` exactly as the originals do. It accepts surrounding whitespace,
a sign (``+7``), ``_`` between digits (``1_000``), exponents (``1e2``), ``nan``, ``inf``, ``infinity``
(any case) and decimal digits of any script (``١٢``, ``１２``). A NaN never passes the tolerance test, so
under ChartQA's rule even GT ``nan`` vs prediction ``nan`` is wrong (the string test is not reached).
"""

from __future__ import annotations

import re

TOLERANCE = 0.05

# A comma between a digit and exactly three digits: "1,000" and "1,000,000", not "1,5" or "1,00".
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def parse_number(text: str) -> float | None:
    """``float(text)``, or ``None`` when Python's ``float()`` rejects it (see the module docstring)."""
    try:
        return float(text)
    except ValueError:
        return None


def within_tolerance(value: float, reference: float, tolerance: float = TOLERANCE) -> bool:
    """``|value - reference| <= |reference| * tolerance`` in doubles (inclusive; NaN never passes)."""
    return abs(value - reference) <= abs(reference) * tolerance


def _chartqa_number(text: str) -> float | None:
    # Recommended fix (official ChartQA relaxed metric): "12%" -> 12, "1,000" -> 1000.
    if text.endswith("%"):
        text = text[:-1]
    return parse_number(_THOUSANDS_COMMA.sub("", text))


def chartqa_correct(answer: str, gt: str, rules: str = "legacy") -> bool:
    """ChartQA relaxed accuracy of a raw output against the GT (both lower-cased here).

    Both numeric: within 5 % of the GT; otherwise string equality. ``rules="recommended"`` strips a
    trailing ``%`` and thousands commas before parsing.
    """
    p, g = answer.lower(), gt.lower()
    number = parse_number if rules == "legacy" else _chartqa_number
    p_num, g_num = number(p), number(g)
    if p_num is not None and g_num is not None:
        return within_tolerance(p_num, g_num)
    return p == g


def mathvista_mmmu_correct(pred: str, gt: str, rules: str = "legacy") -> bool:
    """MathVista/MMMU rule on an already-extracted prediction and an already-normalised GT.

    Exact string match first; else, if both parse, the 5 % test relative to the prediction (legacy,
    the original's swapped call) or to the GT (recommended).
    """
    if pred == gt:
        return True
    p_num, g_num = parse_number(pred), parse_number(gt)
    if p_num is None or g_num is None:
        return False
    if rules == "legacy":
        return within_tolerance(g_num, p_num)
    return within_tolerance(p_num, g_num)
