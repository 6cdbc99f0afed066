"""POPE (``lmms-lab/POPE``, split ``test``, 9,000 yes/no object-hallucination questions on COCO images).

Snapshot: ``data/test-*.parquet`` with columns ``id``, ``question_id``, ``question``, ``answer``
(``yes``/``no``), ``image_source``, ``image`` and ``category``. ``category`` is the subset:
``adversarial``, ``popular`` or ``random``, 3,000 questions each. Prompt: question + "\\n" + "Answer
the question using a single word or phrase." Record, as ``pope_eval.py`` writes it: ``question_id``
(the dataset's), ``gt_answer`` and ``category``.

* legacy, the Cambrian scorer: X3 (first whitespace token, trailing ``.:,`` dropped) == gt. Headline =
  accuracy over all rows, also broken down by subset.
* recommended: the same accuracy is kept under ``accuracy``. The conventional LLaVA POPE metric is
  added per subset (docs/eval-protocols.md s.5.14, 7.6): keep the text before the first ``.``, delete
  commas, split on single spaces, and predict "no" iff the words include ``No``, ``no`` or ``not``
  (case-sensitive), else "yes". The positive class is "yes". The metric reports precision, recall,
  F1, accuracy and yes-ratio, all in percent. **Headline = F1 averaged over the subsets**, with
  ``headline_name`` "f1" in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_WORD, AccuracyBenchmark, Item, field_of, register
from cambrian.eval.data import expect, read_split
from cambrian.eval.extract import extract_x3


def llava_says_yes(text: str) -> bool:
    """LLaVA ``eval_pope``: "no" iff the first sentence (commas removed, split on ' ') has No/no/not."""
    words = set(text.split(".")[0].replace(",", "").split(" "))
    return not ({"No", "no", "not"} & words)


def llava_metrics(predicted_yes: Sequence[bool], label_yes: Sequence[bool]) -> dict[str, Any]:
    """Precision, recall, F1, accuracy and yes-ratio in percent, positive class "yes". An undefined
    ratio, one with a zero denominator, is reported as 0."""
    tp = sum(p and g for p, g in zip(predicted_yes, label_yes))
    fp = sum(p and not g for p, g in zip(predicted_yes, label_yes))
    fn = sum(g and not p for p, g in zip(predicted_yes, label_yes))
    n = len(label_yes)
    tn = n - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": 100.0 * precision,
            "recall": 100.0 * recall, "f1": 100.0 * f1, "accuracy": 100.0 * (tp + tn) / n if n else 0.0,
            "yes_ratio": 100.0 * sum(predicted_yes) / n if n else 0.0}  # fmt: skip


@register
class POPE(AccuracyBenchmark):
    name = "pope"
    title = "POPE"
    max_new_tokens = 128
    expected_n: ClassVar[dict[str, int]] = {"test": 9000}
    category_field = "category"

    def load(self, root: Path, split: str) -> list[Item]:
        rows = read_split(root, split, ["question_id", "question", "answer", "category"], ["image"])
        ids = [str(row["question_id"]) for _, row, _ in rows]
        unique = len(set(ids)) == len(ids)
        items = []
        for i, (where, row, refs) in enumerate(rows):
            question = expect(row["question"], str, where, "question")
            record = {"question_id": row["question_id"], "gt_answer": expect(row["answer"], str, where, "answer"),
                      "category": expect(row["category"], str, where, "category")}  # fmt: skip
            images = list(refs.values())
            items.append(Item(ids[i] if unique else str(i), question + "\n" + SUFFIX_WORD, images, record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x3(self.answer(record)) == str(field_of(record, "gt_answer")).lower()

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        out = super().score(records, rules)
        if rules == "legacy":
            return out
        subsets: dict[str, tuple[list[bool], list[bool]]] = {}
        for r in records:
            predicted, labels = subsets.setdefault(str(field_of(r, "category")), ([], []))
            predicted.append(llava_says_yes(self.answer(r)))
            labels.append(str(field_of(r, "gt_answer")).lower() != "no")
        llava = {s: llava_metrics(p, g) for s, (p, g) in sorted(subsets.items())}
        f1 = [m["f1"] for m in llava.values()]
        out["accuracy"] = out["headline"]
        out["headline"] = sum(f1) / len(f1) if f1 else 0.0
        out["headline_name"] = "f1"
        out["llava"] = llava
        return out
