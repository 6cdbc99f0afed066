"""OCRBench: 1,000 OCR questions in 10 categories (text recognition, scene/document/key-info VQA, HME).

Data: ``echo840/OCRBench`` split ``test``, parquet ``data/test-*.parquet`` with ``dataset``,
``question``, ``question_type`` (the category), ``answer`` (a list of accepted strings), ``image``.
Prompt: the question, then ``SUFFIX_SHORT`` (``Give the short answer directly.``).
Record, as the original writes it: ``question_id`` (row index), ``gt_answer`` (the answer list),
``category`` (``question_type``).
Score (docs/eval-protocols.md s.5.13, the original's CLI default): a row is correct iff some processed GT is
a **substring** of the processed output (``42`` in ``420``; an empty GT always matches). Processing:
category ``Handwritten Mathematical Expression Recognition``: strip, newline -> space, then delete every
space, case kept; any other category: lower-case, strip, newline -> space. Headline =
``total_accuracy['accuracy']`` = 100 x correct / rows; per category ``{"accuracy", "total"}`` in order of
first appearance, as the original's CSV row. No documented fix: recommended == legacy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_SHORT, Benchmark, Item, ScoreError, field_of, register
from cambrian.eval.data import expect, read_split

HME = "Handwritten Mathematical Expression Recognition"
COLUMNS = ("question", "question_type", "answer")


def process(text: str, category: str) -> str:
    """The original's comparison form of an output or a GT for ``category``."""
    if category == HME:
        return text.strip().replace("\n", " ").replace(" ", "")
    return text.lower().strip().replace("\n", " ")


def ocrbench_correct(answer: str, gts: Sequence[str], category: str) -> bool:
    """Containment: some processed GT occurs in the processed answer."""
    pred = process(answer, category)
    return any(process(g, category) in pred for g in gts)


@register
class OCRBench(Benchmark):
    name = "ocrbench"
    title = "OCRBench"
    max_new_tokens = 512
    expected_n: ClassVar[dict[str, int]] = {"test": 1000}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"]):
            question = expect(row["question"], str, where, "question")
            category = expect(row["question_type"], str, where, "question_type")
            answers = expect(row["answer"], list, where, "answer")
            record = {"question_id": len(items), "gt_answer": answers, "category": category}
            prompt = f"{question}\n{SUFFIX_SHORT}"
            items.append(Item(str(len(items)), prompt, list(refs.values()), record))
        return items

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        per_category: dict[str, list[int]] = {}  # category -> [correct, total], first-seen order
        correct = 0
        for i, r in enumerate(records):
            where = f"record {i} (question_id {r.get('question_id')!r})"
            category = field_of(r, "category", where)
            gts = field_of(r, "gt_answer", where)
            if not isinstance(gts, list) or not all(isinstance(g, str) for g in gts):
                raise ScoreError(f"{where}: field 'gt_answer' must be a list of strings, got {gts!r:.120}")
            ok = ocrbench_correct(self.answer(r, where), gts, category)
            correct += ok
            tally = per_category.setdefault(category, [0, 0])
            tally[0] += ok
            tally[1] += 1
        n = len(records)
        headline = 100.0 * (correct / n) if n else None
        return {
            "headline": headline,
            "n": n,
            "correct": correct,
            "total_accuracy": {"accuracy": headline, "total": n},
            "by_category": {
                c: {"accuracy": 100.0 * (k / t), "total": t} for c, (k, t) in per_category.items()
            },
        }
