"""The files ``make quickstart`` trains and evaluates on, rendered from synthetic CV-Bench-style scenes.

``generate`` writes rendered images, grounded alignment captions (stage 1), instruction rows (stage 2),
a held-out CV-Bench-format test split and dense per-cell targets for tower pretraining (stage 0);
``corpus`` yields their text for the tokenizer. Tasks, formats and the correct option's letter are
balanced so every position is equally often right. Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cambrian.eval.cvbench import ANSWER_SUFFIX
from cambrian.quickstart.questions import TASKS, caption, make_question, n_choices, rationale
from cambrian.quickstart.render import dense_targets, render
from cambrian.quickstart.sampling import sample_scene
from cambrian.quickstart.scenes import Scene, SceneConfig

SOURCE = {"2D": "Synthetic2D", "3D": "Synthetic3D"}  # test items' "source" field, like CV-Bench's
# The multiple-choice wording is the scorer's (cambrian.eval.cvbench), so train and test prompts match.
MC_SUFFIX = ANSWER_SUFFIX
SHORT_SUFFIX = "Answer the question using a single word or phrase."
CAPTION_INSTRUCTIONS = (
    "Describe the objects in the image and where they are.",
    "List every object with its position.",
    "What objects are in the image, and where?",
    "Name each object and its location.",
)
DESCRIBE_INSTRUCTION = "Describe the scene."


@dataclass(frozen=True)
class GeneratedData:
    """Where ``generate`` wrote everything (absolute paths) and how much of each."""

    out_dir: Path
    images_dir: Path
    stage1: Path
    stage2: Path
    test: Path
    scenes: Path
    dense_targets: Path
    n_train_scenes: int
    n_test_items: int
    n_stage1: int
    n_stage2: int
    stage2_tasks: dict[str, int] = field(default_factory=dict)  # rows per task (and "Describe")
    test_tasks: dict[str, int] = field(default_factory=dict)


def _row(rid: str, image: str, human: str, gpt: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\n" + human}, {"from": "gpt", "value": gpt}],
        **extra,
    }


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps the current time into the zip entries; a fixed date keeps the bytes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)


_MAX_TEST_COUNT = 3  # test Count answers cycle over 0..3; scenes with 4+ of one kind are rare


class _Progress:
    """A rich progress bar over ``total`` steps when ``show``; a no-op otherwise."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = None
        if show:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.task = self.bar.add_task("rendering synthetic scenes", total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def generate(
    out_dir: str | Path,
    n_train_scenes: int,
    n_test_items: int,
    seed: int | None = None,
    cfg: SceneConfig = SceneConfig(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    describe_every: int = 4,
    progress: bool | None = None,
    reasoning: bool = False,
) -> GeneratedData:
    """Render ``n_train_scenes`` training scenes and ``n_test_items`` test items (one scene each) into
    ``out_dir``: ``images/``, ``stage1.jsonl``, ``stage2.jsonl``, ``test.jsonl``, ``scenes.jsonl`` and
    ``dense_targets.npz``.

    Train and test scenes come from two independent streams spawned from ``seed`` (default
    ``cfg.seed``). Stage 2 asks a scene a task's question only while that task is not ahead of the
    others, then trims every task to the same count (a multiple of formats x letters), so tasks,
    multiple-choice/short formats and correct letters are exactly balanced; Count asks for the count
    value seen least so far. Test items cycle tasks, correct letters and (Count) answers 0..3.
    ``progress``: show a bar (default: when there are at least 500 images). ``reasoning``: multiple-choice
    answers state the grounded facts first and end in "answer: X" (``rationale``) instead of the bare letter.
    """
    seed = cfg.seed if seed is None else seed
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    show = (n_train_scenes + n_test_items >= 500) if progress is None else progress

    scene_rows: list[dict[str, Any]] = []
    stage1: list[dict[str, Any]] = []
    # Stage-2 candidates per task: (scene index, row without id); descriptions kept separately.
    asked: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in TASKS}
    describe: list[tuple[int, dict[str, Any]]] = []
    dense: dict[str, list[np.ndarray]] = {"kind": [], "colour": [], "depth": []}
    test_rows: list[dict[str, Any]] = []
    count_answers: Counter[int] = Counter()  # training Count answers so far

    with _Progress(n_train_scenes + n_test_items, show) as bar:
        for i in range(n_train_scenes):
            scene = sample_scene(train_rng, cfg)
            name = f"images/train_{i:06d}.png"
            render(scene, cfg).save(out / name)
            scene_rows.append({"image": name, "split": "train", **scene.to_json()})
            for key, arr in dense_targets(scene, cfg).items():
                dense[key].append(arr)
            text = caption(scene, cfg)
            stage1.append(
                _row(f"stage1-{i:06d}", name, CAPTION_INSTRUCTIONS[i % len(CAPTION_INSTRUCTIONS)], text)
            )
            if i % describe_every == 0:
                describe.append((i, _row("", name, DESCRIBE_INSTRUCTION, text, task="Describe")))
            least = min(len(v) for v in asked.values())
            for task in TASKS:
                done = len(asked[task])
                if done > least:
                    continue  # this task is ahead: let the rarer tasks catch up
                # Alternate formats; within each format cycle the correct position.
                pos = (done // 2) % n_choices(task, cfg)
                count = None
                if task == "Count":  # ask for the count seen least so far: flattens the answer histogram
                    count = min({scene.count(k) for k in cfg.kinds}, key=lambda n: (count_answers[n], n))
                q = make_question(task, scene, cfg, train_rng, pos, count)
                if q is None:
                    continue
                if task == "Count":
                    count_answers[count] += 1
                if done % 2 == 0:
                    human = q.prompt + "\n" + MC_SUFFIX
                    gpt = rationale(q, scene, cfg) if reasoning else q.letter
                else:
                    human, gpt = q.question + "\n" + SHORT_SUFFIX, q.short_answer
                asked[task].append((i, _row("", name, human, gpt, task=task)))
            bar.advance()

        # Test: items cycle through the tasks; each task cycles its correct position and Count also
        # cycles its answer over 0..3 (independently of the position), so no answer value dominates.
        per_task: Counter[str] = Counter()
        counts = range(min(cfg.max_objects, _MAX_TEST_COUNT) + 1)
        for idx in range(n_test_items):
            task = TASKS[idx % len(TASKS)]
            j, k = per_task[task], n_choices(task, cfg)
            pos = j % k
            count = counts[(j // k) % len(counts)] if task == "Count" else None
            per_task[task] += 1
            q = None
            while q is None:  # resample scenes until one admits this item (e.g. three unique kinds)
                scene = sample_scene(test_rng, cfg)
                q = make_question(task, scene, cfg, test_rng, pos, count)
            name = f"images/test_{idx:06d}.png"
            render(scene, cfg).save(out / name)
            scene_rows.append({"image": name, "split": "test", **scene.to_json()})
            test_rows.append({
                "idx": idx,
                "type": q.type,
                "task": task,
                "question": q.question,
                "choices": list(q.choices),
                "answer": f"({q.letter})",
                "prompt": q.prompt,
                "filename": name,
                "source": SOURCE[q.type],
            })  # fmt: skip
            bar.advance()

    # Equal rows per task, a multiple of 2 formats x the number of choices when there is enough data.
    keep = min(len(v) for v in asked.values())
    cycle = math.lcm(*(2 * n_choices(t, cfg) for t in TASKS))
    keep = keep // cycle * cycle if keep >= cycle else keep
    merged = sorted([x for t in TASKS for x in asked[t][:keep]] + describe, key=lambda x: x[0])
    stage2 = [{**row, "id": f"stage2-{k:06d}"} for k, (_, row) in enumerate(merged)]

    out_paths = {
        "stage1": out / "stage1.jsonl",
        "stage2": out / "stage2.jsonl",
        "test": out / "test.jsonl",
        "scenes": out / "scenes.jsonl",
        "dense_targets": out / "dense_targets.npz",
    }
    _write_jsonl(out_paths["stage1"], stage1)
    _write_jsonl(out_paths["stage2"], stage2)
    _write_jsonl(out_paths["test"], test_rows)
    _write_jsonl(out_paths["scenes"], scene_rows)
    g = cfg.grid
    arrays = {k: np.stack(v) if v else np.zeros((0, g, g), np.uint8) for k, v in dense.items()}
    _save_npz(
        out_paths["dense_targets"], {**arrays, "image": np.array([r["image"] for r in stage1], dtype=str)}
    )
    return GeneratedData(
        out_dir=out.resolve(),
        images_dir=(out / "images").resolve(),
        **{k: p.resolve() for k, p in out_paths.items()},
        n_train_scenes=n_train_scenes,
        n_test_items=n_test_items,
        n_stage1=len(stage1),
        n_stage2=len(stage2),
        stage2_tasks=dict(Counter(r["task"] for r in stage2)),
        test_tasks=dict(Counter(r["task"] for r in test_rows)),
    )


def corpus(out_dir: str | Path) -> Iterator[str]:
    """Every text of a generated dataset (for training a tokenizer): conversation turns without the
    ``<image>`` placeholder, test prompts, choices and answers, and the fixed instruction strings."""
    out = Path(out_dir)
    for name in ("stage1.jsonl", "stage2.jsonl"):
        with open(out / name) as fh:
            for line in fh:
                for turn in json.loads(line)["conversations"]:
                    yield turn["value"].replace("<image>\n", "").replace("<image>", "")
    with open(out / "test.jsonl") as fh:
        for line in fh:
            item = json.loads(line)
            yield item["prompt"] + "\n" + MC_SUFFIX
            yield item["answer"]
            yield from item["choices"]
    yield from (MC_SUFFIX, SHORT_SUFFIX, DESCRIBE_INSTRUCTION, *CAPTION_INSTRUCTIONS)


def example_grid(scenes: Sequence[Scene], cfg: SceneConfig, columns: int = 4, scale: int = 4) -> Image.Image:
    """The scenes rendered side by side (each enlarged ``scale`` x, nearest), for a quick look."""
    side = cfg.image_size * scale
    rows = math.ceil(len(scenes) / columns)
    sheet = Image.new("RGB", (columns * (side + 4) + 4, rows * (side + 4) + 4), (255, 255, 255))
    for k, scene in enumerate(scenes):
        tile = render(scene, cfg).resize((side, side), Image.Resampling.NEAREST)
        sheet.paste(tile, (4 + (k % columns) * (side + 4), 4 + (k // columns) * (side + 4)))
    return sheet
