"""Synthetic CV-Bench-style data: determinism, unique and balanced answers, file formats, perspective."""

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
from cambrian.quickstart.synthetic import (
    COLUMN_WORDS,
    ROW_WORDS,
    TASKS,
    Scene,
    SceneConfig,
    caption,
    corpus,
    correct_choices,
    dense_targets,
    example_grid,
    generate,
    label_map,
    make_object,
    make_question,
    make_scene,
    render,
    sample_scene,
)

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


def truth(question: str, choices: list[str], objects: list[dict]) -> list[int]:
    """Indices of the correct choices, recomputed from scene metadata alone (independent of the module).

    Named kinds must occur exactly once; Depth and Distance need a clear margin, else nothing is correct.
    """
    by_kind = Counter(o["kind"] for o in objects)

    def the(kind: str) -> dict:
        assert by_kind[kind] == 1, f"'the {kind}' is ambiguous in {question!r}"
        return next(o for o in objects if o["kind"] == kind)

    if m := re.fullmatch(r"How many (\w+)s are in the image\?", question):
        return [i for i, c in enumerate(choices) if c == str(by_kind[m[1]])]
    if m := re.fullmatch(r"Where is the (\w+) located with respect to the (\w+)\?", question):
        (ra, ca), (rb, cb) = the(m[1])["cell"], the(m[2])["cell"]
        holds = {"left": ca < cb, "right": ca > cb, "above": ra < rb, "below": ra > rb}
        return [i for i, c in enumerate(choices) if holds[c]]
    if m := re.fullmatch(r"Which object is closer to the camera, the (\w+) or the (\w+)\?", question):
        a, b = the(m[1]), the(m[2])
        assert choices == [m[1], m[2]]
        if max(a["z"], b["z"]) / min(a["z"], b["z"]) < 1.05:
            return []
        return [0 if a["z"] < b["z"] else 1]
    if m := re.fullmatch(r"Which object is closer to the (\w+), the (\w+) or the (\w+)\?", question):
        anchor, a, b = the(m[1]), the(m[2]), the(m[3])
        assert choices == [m[2], m[3]]
        da = np.hypot(a["x"] - anchor["x"], a["z"] - anchor["z"])
        db = np.hypot(b["x"] - anchor["x"], b["z"] - anchor["z"])
        if max(da, db) / min(da, db) < 1.3:
            return []
        return [0 if da < db else 1]
    raise AssertionError(f"unrecognised question {question!r}")


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


# --- config and scenes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"grid": 7},  # no position words for 7 columns
        {"kinds": ("cube", "pyramid")},
        {"colours": ("mauve",)},
        {"max_objects": 17},
        {"min_objects": 3, "max_objects": 2},
        {"horizon": 0.1},  # horizon inside the frame: far objects would be a few pixels
        {"count_choices": 8},
    ],
)
def test_config_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


def test_scene_invariants():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng, CFG)
        cells = [o.cell for o in scene.objects]
        assert CFG.min_objects <= len(cells) <= CFG.max_objects
        assert len(set(cells)) == len(cells) and cells == sorted(cells)
        for o in scene.objects:
            u, v = o.centre
            # The centre lies in its own cell and the whole object inside the frame.
            assert (int(v // CFG.cell), int(u // CFG.cell)) == o.cell
            assert o.size / 2 <= min(u, v) and max(u, v) + o.size / 2 <= CFG.image_size + 1e-6
            assert o.position == (o.x, pytest.approx(CFG.object_height / 2, abs=1e-4), o.z)


def test_perspective_metadata_farther_is_higher_and_smaller():
    rng = np.random.default_rng(1)
    objects = [o for _ in range(100) for o in sample_scene(rng, CFG).objects]
    objects.sort(key=lambda o: (o.z, -o.centre[1]))  # z is stored rounded: ties possible
    v = np.array([o.centre[1] for o in objects])
    size = np.array([o.size for o in objects])
    # Over increasing depth: rows go up and sizes shrink (ties only where values round alike).
    assert np.all(np.diff(v) <= 0) and np.all(np.diff(size) <= 0)
    assert v[0] - v[-1] > CFG.image_size / 2 and size[0] > 1.6 * size[-1]
    rows = [o.cell[0] for o in objects]
    assert rows == sorted(rows, reverse=True)  # near rows at the bottom


def test_perspective_in_pixels_farther_is_higher_and_smaller():
    background = np.asarray(render(Scene(()), CFG), dtype=int)

    def extent(row: int) -> tuple[int, int]:
        scene = make_scene([make_object(CFG, "cube", "red", row, 1)], CFG)
        changed = np.abs(np.asarray(render(scene, CFG), dtype=int) - background).sum(-1) > 60
        ys = np.flatnonzero(changed.any(1))
        return ys[0], ys[-1] - ys[0] + 1  # (top row, height)

    tops, heights = zip(*(extent(r) for r in range(CFG.grid)))
    assert list(tops) == sorted(tops) and len(set(tops)) == CFG.grid  # far rows drawn higher
    assert list(heights) == sorted(heights) and heights[-1] >= 1.6 * heights[0]  # and smaller


def test_ground_gets_darker_with_distance():
    grey = np.asarray(render(Scene(()), CFG), dtype=float).mean(axis=(1, 2))  # (S,) brightness per row
    assert grey[: CFG.image_size // 4].mean() < grey[-CFG.image_size // 4 :].mean() - 20


def test_occlusion_is_partial():
    rng = np.random.default_rng(2)
    for _ in range(60):
        scene = sample_scene(rng, CFG)
        labels = label_map(scene, CFG)
        for i, o in enumerate(scene.objects):
            assert CFG.min_visible <= o.visible <= 1.0
            alone = np.count_nonzero(label_map(make_scene([o], CFG), CFG))
            seen = np.count_nonzero(labels == i + 1)
            assert seen >= (CFG.min_visible - 0.1) * alone  # output-resolution check, some rounding slack


def test_visible_fraction_reports_occlusion():
    far = make_object(CFG, "cube", "red", 2, 1, dv=1.0)  # bottom of its cell ...
    near = make_object(CFG, "cube", "blue", 3, 1, dv=-1.0)  # ... right above the near one
    scene = make_scene([near, far], CFG)
    assert [o.colour for o in scene.objects] == ["red", "blue"]  # row-major order
    assert scene.objects[0].visible < 1.0 and scene.objects[1].visible == 1.0
    labels = label_map(scene, CFG)
    assert np.count_nonzero(labels == 2) > 0 and np.count_nonzero(labels == 1) > 0


def test_dense_targets_match_the_scene():
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, CFG, n_objects=5)
    t = dense_targets(scene, CFG)
    assert set(t) == {"kind", "colour", "depth"}
    occupied = np.zeros((CFG.grid, CFG.grid), bool)
    for o in scene.objects:
        occupied[o.cell] = True
        assert CFG.kinds[t["kind"][o.cell] - 1] == o.kind
        assert CFG.colours[t["colour"][o.cell] - 1] == o.colour
        assert 1 <= t["depth"][o.cell] <= CFG.depth_bins
    for arr in t.values():
        assert arr.shape == (CFG.grid, CFG.grid) and arr.dtype == np.uint8
        assert np.all(arr[~occupied] == 0) and np.all(arr[occupied] > 0)
    zs = sorted((o.z, t["depth"][o.cell]) for o in scene.objects)
    assert [b for _, b in zs] == sorted(b for _, b in zs)  # bins grow with depth


def test_caption_names_every_object_with_its_position():
    objects = [
        make_object(CFG, "ball", "yellow", 0, 1),
        make_object(CFG, "cube", "red", 0, 0),
        make_object(CFG, "ball", "blue", 3, 2),
        make_object(CFG, "cube", "green", 1, 3),
    ]
    coloured = SceneConfig(describe_colour=True)
    # kind by kind (CFG.kinds order), raster order within a kind
    assert caption(make_scene(objects, coloured), coloured) == (
        "cube red left far. cube green right midfar. ball yellow midleft far. ball blue midright near. "
        "2 cubes, 2 balls."
    )
    raster = SceneConfig(caption_order="raster", describe_colour=False)
    assert caption(make_scene(objects, raster), raster) == (
        "cube left far. ball midleft far. cube right midfar. ball midright near. 2 cubes, 2 balls."
    )
    with pytest.raises(ValueError, match="caption_order must be 'kind' or 'raster'"):
        SceneConfig(caption_order="depth")


def test_questions_have_unique_answers_at_the_requested_position():
    rng = np.random.default_rng(4)
    made = Counter()
    for _ in range(150):
        scene = sample_scene(rng, CFG)
        objects = scene.to_json()["objects"]
        for task in TASKS:
            for pos in range(4 if task == "Count" else 2):
                q = make_question(task, scene, CFG, rng, pos)
                if q is None:
                    continue
                made[task] += 1
                assert q.answer == pos and correct_choices(q, scene, CFG) == [pos]
                assert truth(q.question, list(q.choices), objects) == [pos]
                assert len(set(q.choices)) == len(q.choices)
    assert all(made[t] > 20 for t in TASKS), made


# --- generated files --------------------------------------------------------------------------------
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


def test_reasoning_answers_state_grounded_facts_and_score_with_the_legacy_rule(tmp_path):
    from cambrian.eval.cvbench import is_correct
    from cambrian.quickstart.synthetic import SceneConfig, generate, make_question, rationale, sample_scene

    cfg = SceneConfig()
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(200):
        scene = sample_scene(rng, cfg)
        for task in ("Count", "Relation", "Depth", "Distance"):
            q = make_question(task, scene, cfg, rng, answer_pos=int(rng.integers(2)))
            if q is None:
                continue
            text = rationale(q, scene, cfg)
            assert text.endswith(f"answer: {q.letter}")
            assert is_correct(text, f"({q.letter})") and not is_correct(text, "(Z)")
            assert all(k in text for k in q.named)
            seen.add(task)
    assert seen == {"Count", "Relation", "Depth", "Distance"}
    gen = generate(tmp_path, 24, 8, seed=1, reasoning=True)
    rows = [json.loads(x) for x in gen.stage2.read_text().splitlines()]
    mc = [r for r in rows if "Select from the following choices" in r["conversations"][0]["value"]]
    assert mc and all("answer: " in r["conversations"][1]["value"] for r in mc)
