"""ANLS, Average Normalised Levenshtein Similarity (DocVQA, InfographicVQA; docs/eval-protocols.md s.4.4).

For a prediction o and GT answers a_1..a_k, each string is normalised for the distance (strip,
lower-case, internal whitespace collapsed to single spaces), and

    NL_i = Levenshtein(norm(a_i), norm(o)) / max(len(a_i), len(o))      (0 when that length is 0)
    s    = 1 - min_i NL_i,  then s = 0 if s < tau (tau = 0.5; s = 0.5 exactly is kept)

ANLS = mean of s over questions (reported x100). Which lengths divide the distance:

* ``rules="legacy"``: those of the **raw** strings, as the official RRC script does
  (``len(x.upper())``, so ``"Hello "`` against ``"hello"`` divides by 6; the distance is still 0);
* ``rules="recommended"``: those of the normalised strings the distance is computed on. The two differ
  only when a raw string carries extra whitespace (or a character whose upper case is longer, ``ß``).
"""

from __future__ import annotations

from collections.abc import Sequence

THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute; each costs 1).

    Bit-parallel (Myers 1999, in Hyyrö's form for edit distance): one column of the DP table is held as
    two bit vectors of vertical +1/-1 deltas, so each character of the longer string costs a dozen
    integer operations instead of a row of cells; Python's unbounded ints remove the 64-char limit.
    """
    if a == b:
        return 0
    # A common prefix or suffix never changes the distance; short answers often share them.
    start, stop = 0, min(len(a), len(b))
    while start < stop and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a  # the shorter string b is the bit pattern
    m = len(b)
    if m == 0:
        return len(a)
    match: dict[str, int] = {}  # char -> bit set of its positions in b
    for i, c in enumerate(b):
        match[c] = match.get(c, 0) | (1 << i)
    full, top = (1 << m) - 1, 1 << (m - 1)
    plus, minus, dist = full, 0, m  # vertical deltas of the current column; dist = its last cell
    for c in a:
        eq = match.get(c, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        h_plus = minus | ~(xh | plus)
        h_minus = plus & xh
        if h_plus & top:
            dist += 1
        elif h_minus & top:
            dist -= 1
        h_plus = (h_plus << 1) | 1
        h_minus <<= 1
        plus = (h_minus | ~(xv | h_plus)) & full
        minus = h_plus & xv & full
    return dist


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(
    prediction: str, gt_answers: Sequence[str], rules: str = "legacy", threshold: float = THRESHOLD
) -> float:
    """Similarity in [0, 1] of one prediction to its best GT answer, thresholded (module docstring).

    Raises ``ValueError`` for an empty GT list (a question without GT cannot be scored).
    """
    if not gt_answers:
        raise ValueError("ANLS needs at least one GT answer")
    pred = _norm(prediction)
    pred_length = len(prediction.upper()) if rules == "legacy" else len(pred)
    best = 1.0
    for answer in gt_answers:
        gt = _norm(answer)
        length = max(len(answer.upper()) if rules == "legacy" else len(gt), pred_length)
        if not length:
            best = 0.0
            break
        # The length difference bounds the distance from below: skip a GT that cannot lower the best
        # value nor reach the threshold (exact: the min is unchanged either way).
        bound = abs(len(gt) - len(pred)) / length
        if bound > 1 - threshold or bound >= best:
            continue
        best = min(best, levenshtein(gt, pred) / length)
    score = 1 - best
    return score if score >= threshold else 0.0
