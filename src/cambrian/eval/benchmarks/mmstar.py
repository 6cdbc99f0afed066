"""MMStar (``Lin-Chen/MMStar``, config ``mmstar``, split ``val``, 1,500 vision-indispensable MC questions).

Snapshot: the hub repo's single ``mmstar.parquet``, with columns ``index``, ``question``, ``image``,
``answer`` (a letter), ``category``, ``l2_category`` and ``meta_info``. The parquet-converter layout
``val/*.parquet`` is accepted too. The question already holds the options. Prompt: question + "\\n" +
"Please answer directly with only the letter of the correct option and nothing else." Record, as
``mmstar_eval.py`` writes it: ``question_id`` (the running row index), ``gt_answer`` and
``category``. A row is right iff X3(answer) == the lower-cased gt, under both rule sets. Headline =
accuracy in percent over all rows, also broken down by category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_LETTER_ONLY, AccuracyBenchmark, Item, field_of, register
from cambrian.eval.data import expect, read_parquet_rows, split_files
from cambrian.eval.extract import extract_x3


@register
class MMStar(AccuracyBenchmark):
    name = "mmstar"
    title = "MMStar"
    max_new_tokens = 128
    splits: ClassVar[tuple[str, ...]] = ("val",)
    expected_n: ClassVar[dict[str, int]] = {"val": 1500}
    category_field = "category"

    def load(self, root: Path, split: str) -> list[Item]:
        single = root / "mmstar.parquet"
        files = [single] if single.is_file() else split_files(root, split)
        loaded = []
        for path in files:
            for i, (row, refs) in enumerate(
                read_parquet_rows(path, ["index", "question", "answer", "category"], ["image"])
            ):
                where = f"{path}: row {i}"
                question = expect(row["question"], str, where, "question")
                record = {"question_id": len(loaded), "gt_answer": expect(row["answer"], str, where, "answer"),
                          "category": expect(row["category"], str, where, "category")}  # fmt: skip
                images = list(refs.values())
                loaded.append((str(row["index"]), question + "\n" + SUFFIX_LETTER_ONLY, images, record))
        unique = len({key for key, *_ in loaded}) == len(loaded)
        return [Item(key if unique else str(i), *rest) for i, (key, *rest) in enumerate(loaded)]

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x3(self.answer(record)) == str(field_of(record, "gt_answer")).lower()
