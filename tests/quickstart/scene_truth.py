"""Answers to the quickstart's questions recomputed from scene metadata alone, independently of the package.

Shared by ``test_questions`` (questions made in memory) and ``test_dataset`` (questions read from the
generated files): both check that exactly the labelled choice is right.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np


def truth(question: str, choices: list[str], objects: list[dict]) -> list[int]:
    """Indices of the correct choices, recomputed from scene metadata alone (independent of the module).

    Named kinds must occur exactly once; Depth and Distance need a clear margin, else nothing is correct.
    """
    by_kind = Counter(o["kind"] for o in objects)

    def the(kind: str) -> dict:
        assert by_kind[kind] == 1, f"'the {kind}' is ambiguous in {question!r}"
        return next(o for o in objects if o["kind"] == kind)

    if m := re.fullmatch(r"How many (\w+)s are in the image\?", question):
        return [i for i, c in enumerate(choices) if c == str(by_kind[m[1]])]
    if m := re.fullmatch(r"Where is the (\w+) located with respect to the (\w+)\?", question):
        (ra, ca), (rb, cb) = the(m[1])["cell"], the(m[2])["cell"]
        holds = {"left": ca < cb, "right": ca > cb, "above": ra < rb, "below": ra > rb}
        return [i for i, c in enumerate(choices) if holds[c]]
    if m := re.fullmatch(r"Which object is closer to the camera, the (\w+) or the (\w+)\?", question):
        a, b = the(m[1]), the(m[2])
        assert choices == [m[1], m[2]]
        if max(a["z"], b["z"]) / min(a["z"], b["z"]) < 1.05:
            return []
        return [0 if a["z"] < b["z"] else 1]
    if m := re.fullmatch(r"Which object is closer to the (\w+), the (\w+) or the (\w+)\?", question):
        anchor, a, b = the(m[1]), the(m[2]), the(m[3])
        assert choices == [m[2], m[3]]
        da = np.hypot(a["x"] - anchor["x"], a["z"] - anchor["z"])
        db = np.hypot(b["x"] - anchor["x"], b["z"] - anchor["z"])
        if max(da, db) / min(da, db) < 1.3:
            return []
        return [0 if da < db else 1]
    raise AssertionError(f"unrecognised question {question!r}")
