"""Generated quickstart data: determinism, unique and balanced answers, file formats, the text corpus."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cambrian.data.records import check_row
from cambrian.eval.cvbench import load_items
from cambrian.quickstart.dataset import corpus, example_grid, generate
from cambrian.quickstart.questions import TASKS
from cambrian.quickstart.render import dense_targets, render
from cambrian.quickstart.sampling import sample_scene
from cambrian.quickstart.scenes import COLUMN_WORDS, ROW_WORDS, Scene, SceneConfig
from tests.quickstart.scene_truth import truth

CFG = SceneConfig()
N_TRAIN, N_TEST = 240, 64  # 16 test items per task: Count letters 4 x 4, two-choice letters 8 x 2
SELECT = " Select from the following choices."
MC = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic"), N_TRAIN, N_TEST, seed=3)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scenes_by_image(data) -> dict[str, dict]:
    return {row["image"]: row for row in read_jsonl(data.scenes)}


def parse_mc(human: str) -> tuple[str, list[str]]:
    """(question, choices) from a multiple-choice human turn."""
    body = human.removeprefix("<image>\n")
    assert body.endswith("\n" + MC)
    question, _, rest = body.partition(SELECT)
    lines = rest.split("\n")[1:-1]
    choices = []
    for k, line in enumerate(lines):
        assert line.startswith(f"({'ABCD'[k]}) ")
        choices.append(line[4:])
    return question, choices


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generate_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", 12, 8, seed=5)
    b = generate(tmp_path / "b", 12, 8, seed=5)
    c = generate(tmp_path / "c", 12, 8, seed=6)
    digests = file_digests(a.out_dir)
    assert digests == file_digests(b.out_dir)
    assert digests != file_digests(c.out_dir)
    assert {"stage1.jsonl", "stage2.jsonl", "test.jsonl", "scenes.jsonl", "dense_targets.npz"} <= set(digests)
    assert len([k for k in digests if k.startswith("images/")]) == 12 + 8


def test_generated_counts(data):
    assert data.n_train_scenes == N_TRAIN and data.n_test_items == N_TEST
    assert len(read_jsonl(data.stage1)) == data.n_stage1 == N_TRAIN
    assert len(read_jsonl(data.stage2)) == data.n_stage2
    assert len(read_jsonl(data.test)) == N_TEST
    assert len(read_jsonl(data.scenes)) == N_TRAIN + N_TEST
    assert sorted(p.name for p in data.images_dir.iterdir()) == sorted(
        [f"train_{i:06d}.png" for i in range(N_TRAIN)] + [f"test_{i:06d}.png" for i in range(N_TEST)]
    )


def test_test_items_are_cvbench_items(data):
    rows = read_jsonl(data.test)
    items = load_items(data.test)  # the scorer's own loader accepts the file
    assert len(items) == N_TEST
    for k, row in enumerate(rows):
        assert list(row) == [
            "idx",
            "type",
            "task",
            "question",
            "choices",
            "answer",
            "prompt",
            "filename",
            "source",
        ]
        assert row["idx"] == k
        assert row["type"] == ("2D" if row["task"] in ("Count", "Relation") else "3D")
        assert row["source"] == {"2D": "Synthetic2D", "3D": "Synthetic3D"}[row["type"]]
        assert re.fullmatch(r"\([A-D]\)", row["answer"]) and "ABCD".index(row["answer"][1]) < len(
            row["choices"]
        )
        expected = (
            row["question"] + SELECT + "".join(f"\n({'ABCD'[i]}) {c}" for i, c in enumerate(row["choices"]))
        )
        assert row["prompt"] == expected
        assert (data.out_dir / row["filename"]).is_file()
        assert len(row["choices"]) == (4 if row["task"] == "Count" else 2)
        with Image.open(data.out_dir / row["filename"]) as im:
            assert im.size == (CFG.image_size, CFG.image_size) and im.mode == "RGB"


def test_test_answers_are_unique(data):
    scenes = scenes_by_image(data)
    for row in read_jsonl(data.test):
        scene = scenes[row["filename"]]
        assert scene["split"] == "test"
        assert truth(row["question"], row["choices"], scene["objects"]) == ["ABCD".index(row["answer"][1])]


def test_test_split_is_balanced(data):
    rows = read_jsonl(data.test)
    assert Counter(r["task"] for r in rows) == {t: N_TEST // 4 for t in TASKS}
    assert Counter(r["type"] for r in rows) == {"2D": N_TEST // 2, "3D": N_TEST // 2}
    for task in TASKS:
        letters = Counter(r["answer"] for r in rows if r["task"] == task)
        k = 4 if task == "Count" else 2
        assert letters == {f"({x})": N_TEST // 4 // k for x in "ABCD"[:k]}, (task, letters)
    count_answers = Counter(r["choices"]["ABCD".index(r["answer"][1])] for r in rows if r["task"] == "Count")
    assert count_answers == {"0": 4, "1": 4, "2": 4, "3": 4}


def test_stage2_answers_are_right_unique_and_balanced(data):
    scenes = scenes_by_image(data)
    rows = read_jsonl(data.stage2)
    letters: dict[str, Counter] = {t: Counter() for t in TASKS}
    formats = Counter()
    for row in rows:
        human, gpt = (turn["value"] for turn in row["conversations"])
        objects = scenes[row["image"]]["objects"]
        assert scenes[row["image"]]["split"] == "train"
        if row["task"] == "Describe":
            assert human == "<image>\nDescribe the scene."
            formats["Describe"] += 1
        elif human.endswith("\n" + MC):
            question, choices = parse_mc(human)
            assert truth(question, choices, objects) == ["ABCD".index(gpt)]
            letters[row["task"]][gpt] += 1
            formats[row["task"], "mc"] += 1
        else:
            question, _, suffix = human.removeprefix("<image>\n").partition("\n")
            assert suffix == SHORT
            if row["task"] == "Count":
                assert truth(question, [gpt], objects) == [0]
            elif row["task"] == "Relation":
                opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}[gpt]
                assert truth(question, [gpt, opposite], objects) == [0]
            else:  # Depth, Distance: the choices are the two kinds named last
                choices = list(re.search(r"the (\w+) or the (\w+)\?$", question).groups())
                assert truth(question, choices, objects) == [choices.index(gpt)]
            formats[row["task"], "short"] += 1
    per_task = {formats[t, "mc"] + formats[t, "short"] for t in TASKS}
    assert len(per_task) == 1 and per_task.pop() >= 40  # every task equally often
    assert all(formats[t, "mc"] == formats[t, "short"] for t in TASKS)
    for task in TASKS:
        k = 4 if task == "Count" else 2
        assert len(set(letters[task].values())) == 1 and len(letters[task]) == k, (task, letters[task])
    assert formats["Describe"] == -(-N_TRAIN // 4)


def test_every_row_has_one_image_that_exists(data):
    for path in (data.stage1, data.stage2):
        for row in read_jsonl(path):
            assert check_row(row, data.out_dir) == []
            human = [t["value"] for t in row["conversations"] if t["from"] == "human"]
            assert sum(v.count("<image>") for v in human) == 1 and human[0].startswith("<image>\n")
            assert (data.out_dir / row["image"]).is_file()


def test_stage1_captions_are_grounded(data):
    scenes = scenes_by_image(data)
    cols, rows = COLUMN_WORDS[CFG.grid], ROW_WORDS[CFG.grid]
    for row in read_jsonl(data.stage1):
        text = row["conversations"][1]["value"]
        objects = scenes[row["image"]]["objects"]
        objects = sorted(objects, key=lambda o: CFG.kinds.index(o["kind"]))  # kind by kind, stable
        sentences = text.split(". ")
        for o, sentence in zip(objects, sentences):
            r, c = o["cell"]
            assert sentence.rstrip(".") == f"{o['kind']} {cols[c]} {rows[r]}"  # no colour by default
        counts = Counter(o["kind"] for o in objects)
        for n_word in sentences[len(objects)].rstrip(".").split(", "):
            n, word = n_word.split(" ")
            assert counts[word if int(n) == 1 else word[:-1]] == int(n)


def test_dense_targets_file(data):
    with np.load(data.dense_targets) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"kind", "colour", "depth", "image"}
    for key in ("kind", "colour", "depth"):
        assert arrays[key].shape == (N_TRAIN, CFG.grid, CFG.grid) and arrays[key].dtype == np.uint8
    assert list(arrays["image"]) == [f"images/train_{i:06d}.png" for i in range(N_TRAIN)]
    scenes = scenes_by_image(data)
    for i in (0, N_TRAIN // 2, N_TRAIN - 1):
        scene = Scene.from_json(scenes[str(arrays["image"][i])])
        expected = dense_targets(scene, CFG)
        assert all(np.array_equal(arrays[k][i], expected[k]) for k in expected)


def test_scene_metadata_round_trips_and_renders_the_same_image(data):
    scenes = scenes_by_image(data)
    for name in ("images/train_000000.png", "images/test_000003.png"):
        scene = Scene.from_json(scenes[name])
        assert Scene.from_json(scene.to_json()) == scene
        with Image.open(data.out_dir / name) as im:
            assert np.array_equal(np.asarray(im), np.asarray(render(scene, CFG)))


def test_train_and_test_scenes_differ(data):
    rows = read_jsonl(data.scenes)
    train = {json.dumps(r["objects"]) for r in rows if r["split"] == "train"}
    assert not any(json.dumps(r["objects"]) in train for r in rows if r["split"] == "test")


def test_corpus_covers_the_vocabulary(data):
    texts = list(corpus(data.out_dir))
    assert texts and all(isinstance(t, str) and "<image>" not in t for t in texts)
    words = set(" ".join(texts).replace(".", " ").replace(",", " ").replace("?", " ").split())
    assert {*CFG.kinds, *COLUMN_WORDS[4], *ROW_WORDS[4], "left", "above", "below"} <= words


def test_example_grid_size():
    rng = np.random.default_rng(7)
    sheet = example_grid([sample_scene(rng, CFG) for _ in range(8)], CFG, columns=4, scale=2)
    assert sheet.size == (4 * (2 * CFG.image_size + 4) + 4, 2 * (2 * CFG.image_size + 4) + 4)
