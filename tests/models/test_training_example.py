"""CambrianProcessor.training_example: one conversation -> input_ids/labels/pixels, as at inference."""

from __future__ import annotations

import copy

import pytest
import torch

from cambrian import CambrianProcessor, build_tiny, preset_config
from cambrian.models.conversation import build_prompt
from cambrian.models.tokenization import IGNORE_INDEX
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

TWO_IMAGES = [
    {"from": "human", "value": "<image>\nWhat is in the image?"},
    {"from": "gpt", "value": "A red circle."},
    {"from": "human", "value": "And here? <image>"},
    {"from": "gpt", "value": "Two blue cubes."},
]


@pytest.fixture(scope="module")
def proc():
    return build_tiny("tiny")[1]


def _collapse_slots(ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Keep one placeholder per run of image slots, so the ids decode back to the prompt text."""
    slot = ids == image_token_id
    repeat = slot & torch.cat([torch.tensor([False]), slot[:-1]])
    return ids[~repeat]


def _text_turns(n: int = 3) -> list[dict[str, str]]:
    turns = []
    for k in range(n):
        turns += [
            {"from": "human", "value": f"Question {k}: what colour is the square?"},
            {"from": "gpt", "value": f"Answer {k}: the square is green."},
        ]
    return turns


def test_input_ids_decode_to_the_training_prompt_and_pixels_match_inference(proc):
    images = [demo_image(64, 48, 0), demo_image(30, 70, 1)]
    ex = proc.training_example(TWO_IMAGES, images, system="Be brief.")
    prompt = build_prompt("llama_3", TWO_IMAGES, system="Be brief.", add_generation_prompt=False)
    assert proc.decode(_collapse_slots(ex["input_ids"], proc.image_token_id)) == prompt
    assert ex["input_ids"].dtype == ex["labels"].dtype == torch.long
    assert ex["input_ids"].shape == ex["labels"].shape and ex["input_ids"].dim() == 1
    assert ex["image_sizes"].tolist() == [[64, 48], [30, 70]]
    assert int((ex["input_ids"] == proc.image_token_id).sum()) == int(
        proc.num_image_tokens(ex["image_sizes"]).sum()
    )
    # Same preprocessing as the inference path.
    inference = proc(
        text=[proc.apply_chat_template([{"role": "user", "content": "<image><image>"}])], images=images
    )
    assert len(ex["pixel_values"]) == len(proc.preprocessors)
    for ours, theirs in zip(ex["pixel_values"], inference["pixel_values"]):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_text_only_has_no_pixels(proc):
    ex = proc.training_example(
        [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    )
    assert "pixel_values" not in ex and "image_sizes" not in ex
    assert proc.decode(ex["labels"][ex["labels"] != IGNORE_INDEX]) == "Hello.<|eot_id|>"


def test_placeholder_image_mismatch_names_both_counts(proc):
    with pytest.raises(ValueError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        proc.training_example(TWO_IMAGES, [demo_image(32, 32)])
    with pytest.raises(ValueError, match=r"0 <image> placeholder\(s\) but 1 image\(s\)"):
        proc.training_example(_text_turns(1), [demo_image(32, 32)])


def test_truncation_keeps_the_head(proc):
    full = proc.training_example(_text_turns(), system="")
    n = len(full["input_ids"]) - 5
    cut = proc.training_example(_text_turns(), system="", max_length=n)
    assert cut["input_ids"].tolist() == full["input_ids"][:n].tolist()
    assert cut["labels"].tolist() == full["labels"][:n].tolist()
    # Not longer than max_length: unchanged.
    same = proc.training_example(_text_turns(), system="", max_length=len(full["input_ids"]))
    assert same["input_ids"].tolist() == full["input_ids"].tolist()


def test_truncation_never_cuts_an_image(proc):
    images = [demo_image(64, 48, 0), demo_image(30, 70, 1)]
    full = proc.training_example(TWO_IMAGES, images, system="")
    second = int((full["input_ids"] == proc.image_token_id).nonzero()[-1])  # last slot of image 1
    with pytest.raises(
        ValueError, match=rf"{len(full['input_ids'])} tokens > max_length {second} .* cut image 1"
    ):
        proc.training_example(TWO_IMAGES, images, system="", max_length=second)
    with pytest.raises(ValueError, match="cut image 0"):
        proc.training_example(TWO_IMAGES, images, system="", max_length=3)


def test_truncation_that_leaves_no_supervised_token_raises(proc):
    first_label = int(
        (proc.training_example(_text_turns(), system="")["labels"] != IGNORE_INDEX).nonzero()[0]
    )
    with pytest.raises(ValueError, match="leaves no supervised"):
        proc.training_example(_text_turns(), system="", max_length=first_label)
    with pytest.raises(ValueError, match="no supervised token"):
        proc.training_example([{"from": "human", "value": "Only a question?"}])


def test_template_is_required():
    config = preset_config("tiny", conv_mode=None)
    proc = CambrianProcessor.from_config(config, build_tiny_tokenizer())
    with pytest.raises(ValueError, match="no conversation template"):
        proc.training_example(_text_turns(1))
    assert proc.training_example(_text_turns(1), template="phi3")["input_ids"].numel() > 0


def test_processor_system_is_the_default_everywhere_and_is_saved(proc, tmp_path):
    """``processor.system`` replaces the template's default system text in training and inference
    prompts alike, survives save/load, and yields to a row's own system turn or an explicit argument."""
    turns = [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]
    proc = copy.copy(proc)  # the fixture is shared by the module
    proc.system = "Be brief."
    expected = build_prompt("llama_3", turns, system="Be brief.", add_generation_prompt=False)
    assert proc.decode(proc.training_example(turns)["input_ids"]) == expected
    assert proc.apply_chat_template(turns[:1]) == build_prompt("llama_3", turns[:1], system="Be brief.")
    own = [{"from": "system", "value": "Be kind."}, *turns]
    assert "Be kind." in proc.decode(proc.training_example(own)["input_ids"])
    assert "Be brief." not in proc.decode(proc.training_example(own)["input_ids"])
    assert "Be loud." in proc.apply_chat_template(turns[:1], system="Be loud.")

    proc.save_pretrained(tmp_path)
    loaded = CambrianProcessor.from_pretrained(tmp_path)
    assert loaded.system == "Be brief."
    assert loaded.apply_chat_template(turns[:1]) == proc.apply_chat_template(turns[:1])
    proc.system = None
    assert proc.apply_chat_template(turns[:1]) == build_prompt("llama_3", turns[:1])
