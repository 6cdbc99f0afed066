"""Captions and questions: grounded captions, unique answers at the requested position, rationales."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from cambrian.quickstart.dataset import generate
from cambrian.quickstart.questions import TASKS, caption, correct_choices, make_question, rationale
from cambrian.quickstart.sampling import make_object, make_scene, sample_scene
from cambrian.quickstart.scenes import SceneConfig
from tests.quickstart.scene_truth import truth

CFG = SceneConfig()


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


def test_reasoning_answers_state_grounded_facts_and_score_with_the_legacy_rule(tmp_path):
    from cambrian.eval.cvbench import is_correct

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
