"""DocVQA: questions about scanned documents, scored by ANLS where ground truth is available.

Data: ``lmms-lab/DocVQA`` config ``DocVQA``, parquet ``DocVQA/<split>-*.parquet`` with ``questionId``
(a string), ``question``, ``image``, ``answers``. The original ran the ``test`` split (5,188; no public
answers) and only wrote a submission file for the RRC server, so it has no local score. Our default is
``validation`` (5,349), the split that *can* be scored locally; ``test`` is selectable.
Prompt: the question, then ``SUFFIX_SHORT`` (``Give the short answer directly.``).
Record: ``questionId`` as the original writes it, plus ``gt_answer`` (the dataset's answers; ``[]`` on
test) so that validation can be scored.
Score (docs/eval-protocols.md s.4.4): ANLS (``scorers.anls``, tau 0.5) x 100 over the rows with at least one
GT answer; legacy divides by raw-string lengths as the official script, recommended by normalised
ones. No such row (the test split, or the original's answers files) -> headline None, n 0.
``submission()`` writes the rows without GT as the original does: ``docvqa_submission.json`` =
``[{"questionId": int, "answer": raw output}]`` for the RRC server (https://rrc.cvc.uab.es/?ch=17).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_SHORT, Benchmark, Item, ScoreError, field_of, register
from cambrian.eval.data import expect, read_split
from cambrian.eval.scorers.anls import anls

CONFIG = "DocVQA"
SUBMISSION = "docvqa_submission.json"
COLUMNS = ("questionId", "question", "answers")


def _gt(record: dict[str, Any], where: str) -> list[str]:
    gts = record.get("gt_answer")  # absent from the original's records: nothing to score against
    if gts is None:
        return []
    if not isinstance(gts, list) or not all(isinstance(g, str) for g in gts):
        raise ScoreError(f"{where}: field 'gt_answer' must be a list of strings, got {gts!r:.120}")
    return gts


@register
class DocVQA(Benchmark):
    name = "docvqa"
    title = "DocVQA"
    headline_name = "anls"
    max_new_tokens = 128
    splits = ("validation", "test")
    expected_n: ClassVar[dict[str, int]] = {"validation": 5349, "test": 5188}

    def load(self, root: Path, split: str) -> list[Item]:
        items = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"], config=CONFIG):
            qid = expect(row["questionId"], str, where, "questionId")
            question = expect(row["question"], str, where, "question")
            answers = [] if row["answers"] is None else expect(row["answers"], list, where, "answers")
            record = {"questionId": qid, "gt_answer": answers}
            prompt = f"{question}\n{SUFFIX_SHORT}"
            items.append(Item(qid, prompt, list(refs.values()), record))
        return items

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        scores = []
        for i, r in enumerate(records):
            where = f"record {i} (questionId {r.get('questionId')!r})"
            gts = _gt(r, where)
            if gts:
                scores.append(anls(self.answer(r, where), gts, rules))
        if not scores:
            return {"headline": None, "n": 0, "anls": None, "unscored": len(records)}
        mean = sum(scores) / len(scores)
        return {
            "headline": 100.0 * mean,
            "n": len(scores),
            "anls": mean,
            "unscored": len(records) - len(scores),
        }

    def submission(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for i, r in enumerate(records):
            where = f"record {i}"
            if _gt(r, where):
                continue
            qid = field_of(r, "questionId", where)
            try:
                rows.append({"questionId": int(qid), "answer": self.answer(r, where)})
            except (TypeError, ValueError):
                raise ScoreError(f"{where}: field 'questionId' is not an integer id: {qid!r}") from None
        return {SUBMISSION: rows} if rows else {}
