"""TextVQA: questions about text in natural images, scored by 10-annotator VQA accuracy.

Data: ``lmms-lab/textvqa`` split ``validation`` (5,000 questions), parquet ``data/validation-*.parquet``
with ``question_id``, ``question``, ``image``, ``answers`` (10 strings) and ``ocr_tokens``.
Prompt (docs/eval-protocols.md s.5.20): the question, then a line ``Reference OCR tokens:`` followed by the
dataset's OCR tokens as `` t1, t2, ...`` (nothing after the colon when there are none), then
``SUFFIX_WORD``. Record: ``question_id`` (the row index, as the original writes it) and ``gt_answer``.
Score: VQA accuracy (``scorers.vqa``) of every row x 100; each row must carry exactly 10 GT answers
(the original asserts it). Recommended rules differ only in the normaliser's period cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_WORD, Benchmark, Item, ScoreError, field_of, register
from cambrian.eval.data import expect, read_split
from cambrian.eval.scorers.vqa import N_ANNOTATORS, vqa_accuracy

COLUMNS = ("question_id", "question", "answers", "ocr_tokens")


def ocr_line(tokens: Sequence[str]) -> str:
    """``"Reference OCR tokens: a, b"`` (``"Reference OCR tokens:"`` when there are none)."""
    return "Reference OCR tokens:" + "".join((" " if i == 0 else ", ") + t for i, t in enumerate(tokens))


def gt_answers(record: dict[str, Any], where: str) -> list[str]:
    """The record's 10 GT answers; a ``ScoreError`` naming the record when they are not 10 strings."""
    gts = field_of(record, "gt_answer", where)
    if not isinstance(gts, list) or len(gts) != N_ANNOTATORS or not all(isinstance(g, str) for g in gts):
        raise ScoreError(
            f"{where}: field 'gt_answer' must be a list of {N_ANNOTATORS} strings, got {gts!r:.120}"
        )
    return gts


def vqa_score(bench: Benchmark, rows: Iterable[tuple[int, dict[str, Any]]], rules: str) -> dict[str, Any]:
    """Headline = 100 x mean VQA accuracy of ``(index, record)`` rows, computed as the original does
    (``100. * (sum / n)``); no rows -> headline None."""
    scores = []
    for i, r in rows:
        where = f"record {i} (question_id {r.get('question_id', r.get('image_id'))!r})"
        scores.append(vqa_accuracy(bench.answer(r, where), gt_answers(r, where), rules))
    if not scores:
        return {"headline": None, "n": 0, "correct": 0.0}
    return {"headline": 100.0 * (sum(scores) / len(scores)), "n": len(scores), "correct": sum(scores)}


@register
class TextVQA(Benchmark):
    name = "textvqa"
    title = "TextVQA"
    max_new_tokens = 512
    splits = ("validation",)
    expected_n: ClassVar[dict[str, int]] = {"validation": 5000}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"]):
            question = expect(row["question"], str, where, "question")
            tokens = expect(row["ocr_tokens"], list, where, "ocr_tokens")
            answers = expect(row["answers"], list, where, "answers")
            prompt = f"{question}\n{ocr_line(tokens)}\n{SUFFIX_WORD}"
            key = str(expect(row["question_id"], int, where, "question_id"))
            record = {"question_id": len(items), "gt_answer": answers}
            items.append(Item(key, prompt, list(refs.values()), record))
        return items

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        return vqa_score(self, enumerate(records), rules)
