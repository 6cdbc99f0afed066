"""GQA: compositional questions about real-world scenes, scored by exact match.

Data: ``lmms-lab/GQA``, where questions and images are two configs of one repo (as the original loads
them): ``testdev_balanced_instructions/testdev-*.parquet`` (12,578 questions: ``id``, ``imageId``,
``question``, ``answer``, ``fullAnswer``, ``types``) and ``testdev_balanced_images/testdev-*.parquet``
(398 images: ``id``, ``image``), joined on ``imageId`` == image ``id``.
Prompt: the question, then ``SUFFIX_WORD``.
Record, as the original writes it: ``question_id`` (row index), ``gt_answer`` (``answer``),
``category`` (the ``types`` struct: structural/semantic/detailed), ``gt_full_answer`` (``fullAnswer``).
Score: correct iff ``output.lower().rstrip('.') == gt_answer.lower()`` (no VQA normaliser, articles
kept); headline = 100 x correct / rows, plus accuracy per structural and per semantic type when the
records carry them. No documented fix: recommended == legacy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_WORD,
    Benchmark,
    Item,
    ScoreError,
    field_of,
    grouped_percent,
    register,
)
from cambrian.eval.data import DatasetFormatError, expect, read_rows, read_split, split_files

QUESTION_COLUMNS = ("id", "imageId", "question", "answer", "fullAnswer", "types")
TYPE_KEYS = ("structural", "semantic")


@register
class GQA(Benchmark):
    name = "gqa"
    title = "GQA"
    max_new_tokens = 128
    splits = ("testdev_balanced",)
    expected_n: ClassVar[dict[str, int]] = {"testdev_balanced": 12578}

    def load(self, root: Path, split: str) -> list[Item]:
        hf_split = split.split("_")[0]  # config "testdev_balanced_*" holds HF split "testdev"
        images = {  # a null image cell asks the question text-only, as the original
            str(row["id"]): refs.get("image")
            for _, row, refs in read_split(root, hf_split, ["id"], ["image"], config=f"{split}_images")
        }
        items = []
        for path in split_files(root, hf_split, config=f"{split}_instructions"):
            for i, row in enumerate(read_rows(path, QUESTION_COLUMNS)):
                where = f"{path}: row {i}"
                qid = expect(row["id"], str, where, "id")
                image_id = expect(row["imageId"], str, where, "imageId")
                if image_id not in images:
                    raise DatasetFormatError(
                        f"{where}: field 'imageId': {image_id!r} is not an image of {split}_images"
                    )
                record = {
                    "question_id": len(items),
                    "gt_answer": expect(row["answer"], str, where, "answer"),
                    "category": expect(row["types"], dict, where, "types"),
                    "gt_full_answer": expect(row["fullAnswer"], str, where, "fullAnswer"),
                }
                prompt = f"{expect(row['question'], str, where, 'question')}\n{SUFFIX_WORD}"
                image = images[image_id]
                items.append(Item(qid, prompt, [image] if image is not None else [], record))
        return items

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        scores = []
        for i, r in enumerate(records):
            where = f"record {i} (question_id {r.get('question_id')!r})"
            gt = field_of(r, "gt_answer", where)
            if not isinstance(gt, str):
                raise ScoreError(f"{where}: field 'gt_answer' must be a string, got {gt!r:.80}")
            scores.append(float(self.answer(r, where).lower().rstrip(".") == gt.lower()))
        n, correct = len(scores), sum(scores)
        out: dict[str, Any] = {"headline": 100.0 * correct / n if n else None, "n": n, "correct": correct}
        for key in TYPE_KEYS:  # sub-scores only, when every record's "category" (types) has the key
            kinds = [_question_type(r, key) for r in records]
            if n and all(k is not None for k in kinds):
                out[f"by_{key}"] = grouped_percent((str(k) for k in kinds), scores)
        return out


def _question_type(record: dict[str, Any], key: str) -> Any:
    types = record.get("category")
    return types.get(key) if isinstance(types, dict) else None
