"""Answer extractors for multiple-choice benchmarks: the legacy Cambrian rules X1..X6 and lmms-eval's.

Each function turns a model's raw output into the string a scorer compares with the ground truth. The
legacy rules (docs/eval-protocols.md, section 4.1) are reproduced exactly, bugs included, so published
Cambrian numbers can be re-derived; do not "fix" them here (a fixed rule would be a new, opt-in
function). All are pure functions of the text; Python's ``strip``/``lstrip``/``rstrip`` semantics apply
(``rstrip('.')`` drops *all* trailing periods).
"""

from __future__ import annotations

import re

# The order matters: "answer is" is tried before "answer is:", so "The answer is: B" keeps ": b" (a
# known legacy pitfall that makes such outputs wrong).
ANSWER_KEYWORDS = ("answer is", "answer is:", "answer:")

# Trailing characters dropped by X1: ade/coco/seed/vstar drop periods, ai2d/mmbench_en/mmmu/omni also
# ':' and ','. The two only disagree on outputs made of nothing but those characters.
PERIODS = "."
PERIODS_COLONS_COMMAS = ".:,"

# lmms-eval cv_bench: optional '('/whitespace, one letter, optional ')'/'.'/whitespace, at the start.
_LMMS_LETTER = re.compile(r"[(\s]*([a-z])[).\s]*", re.IGNORECASE)


def gt_letter(answer: str) -> str:
    """Ground-truth letter of a ``"(X)"`` answer: its second character, lower-cased (``"(C)"`` -> ``c``)."""
    return answer[1].lower()


def cut_after_keyword(text: str) -> str:
    """X1 step 2: for each of ``ANSWER_KEYWORDS`` in order, keep what follows its last occurrence."""
    for keyword in ANSWER_KEYWORDS:
        if keyword in text:
            text = text.split(keyword)[-1]
    return text


def _x1_steps_1_to_3(text: str, rstrip_chars: str) -> str:
    text = cut_after_keyword(text.lower().strip())
    return text.strip().rstrip(rstrip_chars).lstrip("(").rstrip(")")


def extract_x1(text: str, rstrip_chars: str = PERIODS) -> str:
    """X1 "first char after answer-keyword" (CV-Bench, AI2D, MMBench-EN, MMMU MC, SEED, V*).

    1) lower-case, strip; 2) cut after the last "answer is" / "answer is:" / "answer:" (in that order);
    3) strip, ``rstrip(rstrip_chars)`` (``PERIODS`` or ``PERIODS_COLONS_COMMAS``), ``lstrip('(')``,
    ``rstrip(')')``; 4) if more than one character remains keep only the first.
    ``"The answer is C."`` -> ``c``; ``"(C) 1"`` -> ``c``; ``"The answer is: C"`` -> ``:``; ``"left"`` -> ``l``.
    """
    text = _x1_steps_1_to_3(text, rstrip_chars)
    return text[0] if len(text) > 1 else text


def extract_x2(text: str) -> str:
    """X2 "letter or option text" (MMVP): X1 steps 1-3 with the ``.:,`` variant, no truncation.

    The caller accepts the result if it equals the GT letter or the lower-cased GT option text:
    ``"Answer: A"`` -> ``a``, ``"open"`` -> ``open``, but ``"(a) Open"`` -> ``a) open`` (wrong).
    """
    return _x1_steps_1_to_3(text, PERIODS_COLONS_COMMAS)


def extract_x3(text: str) -> str:
    """X3 "first whitespace token" (POPE, MMStar, MMBench-CN): lower-case, first token, ``rstrip('.:,')``.

    ``"(A)"`` -> ``(a)`` (the original never matches it: wrong); ``"No, there is not."`` -> ``no``. An empty
    output gives ``""`` (the original crashes on it; it must simply be wrong).
    """
    tokens = text.lower().split()
    return tokens[0].rstrip(PERIODS_COLONS_COMMAS) if tokens else ""


def extract_x4(text: str) -> str:
    """X4 "text before first period" (Q-Bench): text before the first ``.``, lower-case, strip.

    ``"A. Blurry"`` -> ``a``; ``"(A)"`` -> ``(a)`` and ``"A blurry"`` -> ``a blurry`` (both wrong).
    """
    return text.split(".")[0].lower().strip()


def extract_x5(text: str) -> str:
    """X5 BLINK: text before the first ``.``, lower-case, strip, first *space*-separated token,
    ``lstrip('(')``, ``rstrip(')')``. ``"(A) yes"`` -> ``a``; ``"The answer is A"`` -> ``the`` (wrong).
    """
    return text.split(".")[0].lower().strip().split(" ")[0].lstrip("(").rstrip(")")


def extract_x6(text: str, first_token: bool = False) -> str:
    """X6 "single answer" (MMMU open, RealWorldQA, ScienceQA): lower-case, strip, keyword cut as in X1,
    strip, ``rstrip('.')``.

    ``first_token=True`` (RealWorldQA) then keeps the first whitespace token, so ``"B. Left"`` -> ``b.``
    (wrong) and ``"Left."`` -> ``left``.
    """
    text = cut_after_keyword(text.lower().strip()).strip().rstrip(PERIODS)
    if first_token:
        tokens = text.split()
        text = tokens[0] if tokens else ""
    return text


def extract_lmms_eval_letter(text: str) -> str:
    """lmms-eval ``cv_bench`` rule: the letter at the very start of the stripped output, upper-cased.

    Matches an optional run of ``(``/whitespace, one letter, then optional ``)``/``.``/whitespace; ``""``
    when the output does not start that way. Anything starting with a letter yields that letter, so
    ``"The answer is C."`` -> ``T`` and ``"Cat"`` -> ``C``; ``"1"`` -> ``""``.
    """
    match = _LMMS_LETTER.match(text.strip())
    return match.group(1).upper() if match else ""
