"""``stream_reply``: the model's next assistant reply, handed out piece by piece as it is generated.

Generation runs in a background thread feeding a transformers ``TextIteratorStreamer``; the caller's
loop receives text pieces as soon as they are safe to show (``TextDeltas``). Greedy pieces joined are
exactly ``CambrianProcessor.generate_replies`` for the same conversation: same prompt, same stop
tokens, same decoding, same stripping. Leaving the loop early stops generation at the next token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from cambrian.serve.text import TextDeltas


class _Flag(StoppingCriteria):
    """Stops every row once ``event`` is set (the consumer went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def stream_reply(
    model,
    processor,
    messages: Sequence[dict[str, str]],
    images=None,
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    **generate_kwargs,
) -> Iterator[str]:
    """Yield the reply to ``messages`` (``{"role", "content"}`` dicts) in pieces as tokens arrive.

    ``images`` are PIL images in the order of the ``<image>`` placeholders; ``stop`` strings end the
    reply early (not included); ``generate_kwargs`` go to ``model.generate`` (greedy unless
    ``do_sample=True``). Errors raised by generation are re-raised here.
    """
    text = processor.apply_chat_template(list(messages))
    inputs = processor(text=[text], images=images or None, padding_side="left").to(model.device)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel, failure = threading.Event(), []
    generate_kwargs.setdefault("do_sample", False)

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **inputs, max_new_tokens=max_new_tokens, eos_token_id=processor.stop_token_ids(),
                    pad_token_id=processor.tokenizer.pad_token_id, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Flag(cancel)]), **generate_kwargs,
                )  # fmt: skip
        except BaseException as e:  # handed to the consumer, which re-raises it
            failure.append(e)
        finally:
            streamer.end()  # idempotent enough: an extra end only flushes an empty cache

    thread = threading.Thread(target=run, name="cambrian-stream", daemon=True)
    thread.start()
    deltas, full = TextDeltas(stop), ""
    try:
        for piece in streamer:
            full += piece
            out = deltas.feed(full)
            if out:
                yield out
            if deltas.stopped:
                break
        if failure:
            raise failure[0]
        last = deltas.finish(full)
        if last:
            yield last
    finally:
        cancel.set()
        thread.join()
