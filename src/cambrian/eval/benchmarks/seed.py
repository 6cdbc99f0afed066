"""SEED-Bench (SEED-I): four-option questions on single images, 9 dimensions (General category).

Data: ``lmms-lab/SEED-Bench``, split ``test``, parquet ``data/test-*.parquet`` with columns
``question_id``, ``question``, ``choice_a`` .. ``choice_d``, ``answer`` (letter), ``question_type_id``
(int, 1-9 for image dimensions) and ``image`` (a *list* of images: one for image questions, several
frames for video questions). Rows with more than one image are skipped, as the original does; only the
single-image questions (the SEED-Bench image dimensions 1-9: 14,233) become items, keyed by
``question_id``.
Prompt: question + " Options:" + "\\nA. a\\nB. b\\nC. c\\nD. d" + "\\n" + "Answer with the option's letter
from the given choices directly."
Record (as ``seed_eval.py``): ``question_id`` (row index in the whole split, skipped rows included),
``gt_answer``, ``category`` (``question_type_id``, int).
Rule (legacy = recommended): X1 (R ``.``) == lower-cased GT. Headline: accuracy (%), n = rows;
sub-scores per dimension name (a category outside 1-9 is an error, the original crashes on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_LETTER,
    AccuracyBenchmark,
    Item,
    ScoreError,
    field_of,
    lettered,
    register,
)
from cambrian.eval.data import (
    DatasetFormatError,
    ImageRef,
    expect,
    read_rows,
    split_files,
)
from cambrian.eval.extract import PERIODS, extract_x1

COLUMNS = (
    "question_id",
    "question",
    "choice_a",
    "choice_b",
    "choice_c",
    "choice_d",
    "answer",
    "question_type_id",
)
DIMENSIONS = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attribute",
    4: "Instance Location",
    5: "Instance Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Recognition",
}


def image_counts(path: Path) -> list[int | None]:
    """Length of each row's ``image`` list (None for a null cell), without reading the image bytes."""
    import polars as pl

    try:
        return pl.scan_parquet(path).select(pl.col("image").list.len()).collect().to_series().to_list()
    except Exception as e:  # a missing column or a column that is not a list
        raise DatasetFormatError(f"{path}: field 'image': expected a list of images ({e})") from None


@register
class SEED(AccuracyBenchmark):
    name = "seed"
    title = "SEED-Bench-Image"
    category_field = "category"
    max_new_tokens = 512
    splits = ("test",)
    expected_n: ClassVar[dict[str, int]] = {"test": 14233}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        index = 0  # the original's question_id: the row's position in the whole split
        for path in split_files(root, split):
            rows, counts = read_rows(path, COLUMNS), image_counts(path)
            for j, (row, count) in enumerate(zip(rows, counts)):
                where = f"{path}: row {j}"
                if not count:
                    raise DatasetFormatError(
                        f"{where}: field 'image': expected at least one image, got {count}"
                    )
                if count == 1:  # video questions (several frames) are skipped, as in the original
                    items.append(self._item(row, ImageRef(str(path), j, "image", index=0), index, where))
                index += 1
        return items

    def _item(self, row: dict[str, Any], image: ImageRef, index: int, where: str) -> Item:
        choices = [expect(row[f"choice_{c}"], str, where, f"choice_{c}") for c in "abcd"]
        question = expect(row["question"], str, where, "question")
        category = expect(row["question_type_id"], int, where, "question_type_id")
        record = {
            "question_id": index,
            "gt_answer": expect(row["answer"], str, where, "answer"),
            "category": category,
        }
        prompt = f"{question} Options:{lettered(choices)}\n{SUFFIX_LETTER}"
        return Item(
            str(expect(row["question_id"], (str, int), where, "question_id")), prompt, [image], record
        )

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x1(self.answer(record), PERIODS) == str(field_of(record, "gt_answer")).lower()

    def category(self, record: dict[str, Any]) -> str:
        return dimension(record)


def dimension(record: dict[str, Any]) -> str:
    """The SEED dimension name of a record's ``category`` (1-9); anything else is a ScoreError."""
    category = field_of(record, "category")
    if isinstance(category, bool) or not isinstance(category, (int, float)) or category not in DIMENSIONS:
        raise ScoreError(
            f"record {record.get('question_id', '?')}: field 'category': expected 1-9, got {category!r}"
        )
    return DIMENSIONS[category]
