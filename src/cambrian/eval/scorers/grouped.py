"""Scores over groups of rows: MME acc/acc+, MMVP question pairs, MMBench circular accuracy.

Each scorer takes per-row correctness that the benchmark has already decided, plus what defines a group,
and returns counts and percentages. Two rule sets (docs/eval-legacy-scorers.md, docs/eval-protocols.md s.5.6, 5.7,
5.12, 7.4, 7.5, 7.7):

* **legacy** reproduces the original scripts, which never look at an image or question id. MME's acc+
  and MMVP's pairs come from the 0-based line number of the whole answers file, so they depend on file
  order. ``mme_legacy`` and ``mmvp_pairs_by_line``.
* **recommended** groups explicitly: MME by (category, image id), where an image counts iff all its
  questions are right; MMVP by question-id pairs. On the data set's own order the results equal
  legacy. ``mme_grouped`` and ``mmvp_pairs_by_id``.

MMBench's circular accuracy (``circular_accuracy``) does not depend on row order, so both rule sets
share it. Its group key includes ``mmbench_image_hash``: MurmurHash3 x86_32 of the 256x256 resized
image, as the original eval wrote it into ``source_id``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cambrian.eval.benchmark import ScoreError

# ---------------------------------------------------------------------------------------------- MME
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_SUBTASKS = MME_PERCEPTION + MME_COGNITION


@dataclass
class MMESubtask:
    """One MME subtask: ``size`` questions, ``correct`` of them right, ``plus`` = acc+ in percent."""

    size: int = 0
    correct: int = 0
    plus: float = 0.0

    @property
    def acc(self) -> float:
        return 100.0 * self.correct / self.size if self.size else 0.0


def check_mme_category(category: Any) -> str:
    """``category`` if it is one of the 14 MME subtasks, else a ``ScoreError`` listing them."""
    if category not in MME_SUBTASKS:
        raise ScoreError(
            f"MME category {category!r} is not one of the 14 subtasks: {', '.join(MME_SUBTASKS)}"
        )
    return category


def mme_legacy(rows: Iterable[tuple[str, bool]]) -> dict[str, MMESubtask]:
    """Per-subtask counts and acc+ of the original ``mme_test.py``. ``rows`` gives (category, correct)
    in file order.

    For each category, a state machine runs over the 0-based line number of the whole file. On an even
    line, a correct row closes the pair if the category has a pending row and otherwise becomes
    pending; a wrong row changes nothing, so an earlier pending row stays pending. On an odd line, if
    the category has a pending row, a correct row closes the pair; the pending mark is cleared either
    way. acc+ count = 2 x closed pairs + 1 if a row is still pending at the end.
    """
    tallies: dict[str, MMESubtask] = {}  # first-appearance order, as the original sums them
    closed: dict[str, int] = {}
    pending: dict[str, bool] = {}
    for line, (category, ok) in enumerate(rows):
        t = tallies.get(category)
        if t is None:
            t = tallies[check_mme_category(category)] = MMESubtask()
            closed[category], pending[category] = 0, False
        t.size += 1
        t.correct += ok
        if line % 2 == 0:
            if ok:
                if pending[category]:
                    closed[category] += 1
                pending[category] = not pending[category]
        elif pending[category]:
            closed[category] += ok
            pending[category] = False
    for category, t in tallies.items():
        t.plus = 100.0 * (2 * closed[category] + pending[category]) / t.size
    return tallies


def mme_grouped(rows: Iterable[tuple[str, Hashable, bool]]) -> dict[str, MMESubtask]:
    """Per-subtask counts with acc+ = % of images all of whose questions are right. ``rows`` gives
    (category, image id, correct); row order does not matter."""
    tallies: dict[str, MMESubtask] = {}
    images: dict[tuple[str, Hashable], bool] = {}
    for category, image, ok in rows:
        t = tallies.get(category)
        if t is None:
            t = tallies[check_mme_category(category)] = MMESubtask()
        t.size += 1
        t.correct += ok
        key = (category, image)
        images[key] = images.get(key, True) and ok
    per_category: dict[str, list[int]] = {c: [0, 0] for c in tallies}
    for (category, _), all_right in images.items():
        per_category[category][0] += 1
        per_category[category][1] += all_right
    for category, (n_images, n_right) in per_category.items():
        tallies[category].plus = 100.0 * n_right / n_images
    return tallies


def mme_summary(tallies: dict[str, MMESubtask]) -> dict[str, Any]:
    """Perception (sum of the perception subtasks present, 0-2000), Cognition (0-800), total score,
    overall question accuracy, and per subtask ``{n, acc, acc_plus, score}`` in the canonical order."""
    sums = {"Perception": 0.0, "Cognition": 0.0}
    for category, t in tallies.items():
        sums["Perception" if category in MME_PERCEPTION else "Cognition"] += t.acc + t.plus
    size = sum(t.size for t in tallies.values())
    correct = sum(t.correct for t in tallies.values())
    by_subtask = {
        c: {"n": tallies[c].size, "acc": tallies[c].acc, "acc_plus": tallies[c].plus,
            "score": tallies[c].acc + tallies[c].plus}
        for c in MME_SUBTASKS if c in tallies
    }  # fmt: skip
    return {
        **sums,
        "total_score": sums["Perception"] + sums["Cognition"],
        "accuracy": 100.0 * correct / size if size else 0.0,
        "by_subtask": by_subtask,
    }


# --------------------------------------------------------------------------------------------- MMVP
def mmvp_pairs_by_line(correct: Sequence[bool]) -> dict[str, Any]:
    """The original ``mmvp_test.py``: lines (2k, 2k+1) of the file form a pair. A pair with both rows
    right credits 2; with an odd row count, the unpaired last line credits 1 if it is right.
    accuracy = 100 x credit / rows."""
    credit = sum(2 for k in range(0, len(correct) - 1, 2) if correct[k] and correct[k + 1])
    if len(correct) % 2 and correct[-1]:
        credit += 1
    return {
        "accuracy": 100.0 * credit / len(correct) if correct else 0.0,
        "credit": credit,
        "rows": len(correct),
        "pairs": len(correct) // 2,
        "pairs_correct": credit // 2,
    }


def mmvp_pairs_by_id(rows: Iterable[tuple[int, bool]], first_id: int = 0) -> dict[str, Any]:
    """Pairs by question id: ids ``first_id + 2k`` and ``first_id + 2k + 1`` form pair k, whatever their
    line order. A pair is right iff all its rows are. accuracy = 100 x right pairs / pairs. A pair with
    a missing partner is judged on the row it has."""
    pairs: dict[int, bool] = {}
    n = 0
    for qid, ok in rows:
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise ScoreError(f"question_id {qid!r} is not an integer; pairs by id need integer ids")
        n += 1
        key = (qid - first_id) // 2
        pairs[key] = pairs.get(key, True) and ok
    right = sum(pairs.values())
    return {
        "accuracy": 100.0 * right / len(pairs) if pairs else 0.0,
        "rows": n,
        "pairs": len(pairs),
        "pairs_correct": right,
    }


# ------------------------------------------------------------------------------------------ MMBench
def is_scored_gt(gt: Any) -> bool:
    """MMBench scores a row only if its ``gt_answer`` is neither ``""`` nor null (test rows have none)."""
    return gt is not None and gt != ""


def circular_accuracy(rows: Iterable[tuple[str, str, bool]]) -> dict[str, Any]:
    """Circular accuracy over (category, source_id, correct) rows that are already known to be scored.

    A group is (category, source_id), so the same source_id in two categories makes two groups. A
    group is right iff all its rows are. circular_accuracy = right groups / groups, pooled over the
    categories; accuracy = right rows / rows. Both are percentages, and row order does not matter.
    """
    groups: dict[tuple[str, str], bool] = {}
    per_category: dict[str, list[int]] = {}
    for category, source_id, ok in rows:
        counts = per_category.setdefault(category, [0, 0])
        counts[0] += 1
        counts[1] += ok
        key = (category, source_id)
        groups[key] = groups.get(key, True) and ok
    by_category: dict[str, dict[str, Any]] = {
        c: {"n": n, "accuracy": 100.0 * right / n, "groups": 0, "groups_correct": 0}
        for c, (n, right) in sorted(per_category.items())
    }
    for (category, _), ok in groups.items():
        by_category[category]["groups"] += 1
        by_category[category]["groups_correct"] += ok
    for entry in by_category.values():
        entry["circular_accuracy"] = 100.0 * entry["groups_correct"] / entry["groups"]
    rows_n = sum(n for n, _ in per_category.values())
    rows_right = sum(r for _, r in per_category.values())
    right = sum(groups.values())
    return {
        "circular_accuracy": 100.0 * right / len(groups) if groups else 0.0,
        "accuracy": 100.0 * rows_right / rows_n if rows_n else 0.0,
        "n": rows_n,
        "correct": rows_right,
        "groups": len(groups),
        "groups_correct": right,
        "by_category": by_category,
    }


_MASK = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data``, signed, as ``mmh3.hash(data, seed)`` returns it.

    The 4-byte blocks are mixed with numpy (uint32 arithmetic wraps modulo 2**32). Each block then
    updates the running hash in plain Python, because every step needs the previous one.
    """
    n = len(data)
    nblocks = n // 4
    h = seed & _MASK
    if nblocks:
        k = np.frombuffer(data, dtype="<u4", count=nblocks).astype(np.uint32)
        k *= np.uint32(0xCC9E2D51)
        k = (k << np.uint32(15)) | (k >> np.uint32(17))
        k *= np.uint32(0x1B873593)
        for block in k.tolist():
            x = h ^ block
            # rotl(x, 13) * 5 + 0xe6546b64, reduced once: multiplying and adding commute with mod 2**32
            h = (((x << 13) | (x >> 19)) * 5 + 0xE6546B64) & _MASK
    tail = data[nblocks * 4 :]
    if tail:
        k1 = (int.from_bytes(tail, "little") * 0xCC9E2D51) & _MASK
        k1 = (((k1 << 15) | (k1 >> 17)) * 0x1B873593) & _MASK
        h ^= k1
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


def mmbench_image_hash(image: Image.Image) -> str:
    """The image fingerprint in the original MMBench ``source_id``.

    The RGB image is resized to 256x256 (Pillow's default filter for RGB, bicubic) and its raw bytes are
    hashed with MurmurHash3 (seed 0, signed). The hash is then formatted with ``format(h, '08x')``, so a
    negative hash keeps its minus sign and the sign counts toward the width: ``-95a3be0``, ``-0000005``.
    """
    raw = image.convert("RGB").resize((256, 256), Image.Resampling.BICUBIC).tobytes()
    return format(murmur3_32(raw), "08x")
