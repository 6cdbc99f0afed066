"""MMBench-EN (``lmms-lab/MMBench_EN``, split ``dev``, 4,377 rows = circular variants of ~1.2k questions).

Snapshot: ``data/dev-*.parquet`` (and ``data/test-*``) with columns ``index``, ``question``, ``hint``,
``A`` to ``D``, ``answer``, ``category``, ``image``, ``source``, ``l2-category``, ``comment`` and
``split``. The image is an HF struct; a base64 string, as in the TSV-derived mirrors, also works.
Missing values are the string ``"nan"``.

Prompt (docs/eval-protocols.md s.5.6):
* the hint and "\\n", only when the hint is not ``"nan"``;
* the question and " Options:";
* "\\n<K>. <text>" for each option K of A-D whose text is not ``"nan"``;
* "\\n" + "Answer with the option's letter from the given choices directly."

Record, as ``mmbench_en_eval.py`` writes it: ``index``, ``question``, ``gt_answer``, ``A``-``D``,
``category`` and ``source_id``. The output goes under ``prediction``. ``source_id`` is question + " " +
image hash + " " + source, and the image hash is ``scorers.grouped.mmbench_image_hash`` of the decoded
RGB image, computed while loading. A row without an image gets an empty hash.

Score, the same under both rule sets: rows whose gt_answer is ``""`` or null are skipped. A row is
right iff X1 (``.:,`` variant) of the prediction == the lower-cased gt. Headline = circular accuracy
over (category, source_id) groups; plain row accuracy and the per-category numbers are also
reported. The original also dumped an xlsx for the MMBench server, which is not reproduced here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_LETTER, Benchmark, Item, field_of, register
from cambrian.eval.data import ImageRef, decode_image, expect, read_rows, split_files
from cambrian.eval.extract import PERIODS_COLONS_COMMAS, extract_x1
from cambrian.eval.scorers.grouped import circular_accuracy, is_scored_gt, mmbench_image_hash

OPTION_KEYS = ("A", "B", "C", "D")
COLUMNS = ("index", "question", "hint", *OPTION_KEYS, "answer", "category", "source", "image")


def present(value: Any) -> bool:
    """A hint/option is shown unless it is the string ``"nan"`` (null is treated the same)."""
    return value is not None and value != "nan"


def mmbench_prompt(row: dict[str, Any], suffix: str) -> str:
    text = (row["hint"] + "\n" if present(row["hint"]) else "") + row["question"] + " Options:"
    text += "".join(f"\n{k}. {row[k]}" for k in OPTION_KEYS if present(row[k]))
    return text + "\n" + suffix


class MMBench(Benchmark):
    """MMBench EN/CN: subclasses set the name, suffix, token budget and the extractor (``extract``)."""

    answer_field = "prediction"
    splits: ClassVar[tuple[str, ...]] = ("dev", "test")
    suffix: ClassVar[str]

    def extract(self, output: str) -> str:
        raise NotImplementedError

    def load(self, root: Path, split: str) -> list[Item]:
        loaded = []
        hashes: dict[Any, str] = {}  # circular variants repeat the same image bytes: hash each once
        for path in split_files(root, split):
            for i, row in enumerate(read_rows(path, COLUMNS)):
                where = f"{path}: row {i}"
                for name in ("question", "category", "source"):
                    expect(row[name], str, where, name)
                expect(row["index"], (int, str), where, "index")
                for name in ("hint", "answer", *OPTION_KEYS):
                    expect(row[name], (str, type(None)), where, name)
                cell, image_hash = row["image"], ""
                if cell is not None:
                    key = (cell.get("bytes") or cell.get("path")) if isinstance(cell, dict) else cell
                    if key not in hashes:
                        hashes[key] = mmbench_image_hash(
                            decode_image(cell, f"{where}, field 'image'", path.parent)
                        )
                    image_hash = hashes[key]
                record = {"index": row["index"], "question": row["question"], "gt_answer": row["answer"],
                          **{k: row[k] for k in OPTION_KEYS},
                          "source_id": row["question"] + " " + image_hash + " " + row["source"],
                          "category": row["category"]}  # fmt: skip
                images = [ImageRef(str(path), i, "image")] if cell is not None else []
                loaded.append((str(row["index"]), mmbench_prompt(row, self.suffix), images, record))
        unique = len({key for key, *_ in loaded}) == len(loaded)
        return [Item(key if unique else str(i), *rest) for i, (key, *rest) in enumerate(loaded)]

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        rows = [
            (str(field_of(r, "category")), str(field_of(r, "source_id")),
             self.extract(self.answer(r)) == str(r["gt_answer"]).lower())
            for r in records if is_scored_gt(field_of(r, "gt_answer"))
        ]  # fmt: skip
        result = circular_accuracy(rows)
        return {"headline": result["circular_accuracy"], **result}


@register
class MMBenchEN(MMBench):
    name = "mmbench_en"
    title = "MMBench-EN"
    headline_name = "circular_accuracy"
    max_new_tokens = 512
    expected_n: ClassVar[dict[str, int]] = {"dev": 4377, "test": 6718}
    suffix = SUFFIX_LETTER

    def extract(self, output: str) -> str:
        return extract_x1(output, PERIODS_COLONS_COMMAS)
