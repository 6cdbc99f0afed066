"""A tiny byte-level BPE tokenizer trained in-process, for tests and the offline quickstart.

Nothing is downloaded: ``build_tiny_tokenizer`` trains a BPE model with the ``tokenizers`` library on a
small generated English corpus (shapes, colours, counting, spatial relations, plus the template system
prompts) in a few milliseconds, and wraps it as a ``PreTrainedTokenizerFast``. Every template marker
(``<|eot_id|>``, ``<|im_start|>``, ``</s>``, ...) and ``<image>`` is a single special token, so all
built-in conversation templates tokenise the way they do with the real LLM tokenizers. Like the
original Llama-3 tokenizer it adds no BOS by itself (the llama_3 prompt carries a literal
``<|begin_of_text|>``). Same arguments, same vocabulary: BPE training is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from cambrian.models.conversation import TEMPLATES

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
TEMPLATE_TOKENS = (
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<s>",
    "</s>",
)
# Ids follow this order: <|begin_of_text|> = 0, <|end_of_text|> = 1, <pad> = 2, <unk> = 3, <image> = 4, ...
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, IMAGE_TOKEN, *TEMPLATE_TOKENS)

_COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "gray", "pink", "brown")
_SHAPES = ("circle", "square", "triangle", "star", "cube", "sphere", "cylinder", "cone", "heart", "hexagon")
_RELATIONS = ("left of", "right of", "above", "below", "near", "far from", "next to", "behind", "in front of")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def default_corpus(num_sentences: int = 400, seed: int = 0) -> list[str]:
    """A deterministic toy English corpus: template prompts plus ``num_sentences`` generated sentences."""
    rng = random.Random(seed)
    lines = [
        TEMPLATES.get(name).upstream_system for name in ("llama_3", "vicuna_v1", "chatml_direct", "phi3")
    ]
    lines += ["USER: What is in the image? ASSISTANT: A picture.", "system user assistant"]
    for _ in range(num_sentences):
        c1, c2 = rng.sample(_COLOURS, 2)
        s1, s2 = rng.sample(_SHAPES, 2)
        rel = rng.choice(_RELATIONS)
        n = rng.randrange(len(_NUMBERS))
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(f"The {c1} {s1} is {rel} the {c2} {s2}.")
        elif kind == 1:
            lines.append(f"Is the {c1} {s1} {rel} the {c2} {s2}? {rng.choice(('Yes.', 'No.'))}")
        elif kind == 2:
            lines.append(f"How many {c1} {s1}s are there? There are {_NUMBERS[n]} ({n}) {c1} {s1}s.")
        elif kind == 3:
            lines.append(f"What colour is the {s1}? The {s1} is {c1}.")
        elif kind == 4:
            lines.append(f"<image>\nDescribe the image. I see {n} {s1}s and a {c2} {s2} {rel} them.")
        else:
            lines.append(f"Count the shapes: {n}, {n + 1}, {n + 2}. The {s2} is far away; the {s1} is near.")
    return lines


def build_tiny_tokenizer(
    vocab_size: int = 512,
    corpus: Iterable[str] | None = None,
    *,
    seed: int = 0,
    model_max_length: int = 2048,
    padding_side: str = "right",
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer in-process and wrap it for ``transformers``.

    Args:
        vocab_size: total vocabulary including the 256 byte symbols and the special tokens.
        corpus: training text; defaults to ``default_corpus(seed=seed)``.
        seed: seeds the generated default corpus (ignored when ``corpus`` is given).
        model_max_length: stored on the tokenizer (Cambrian trains with 2048).
        padding_side: "right" like the original training.

    The result saves with ``save_pretrained`` and reloads offline with ``AutoTokenizer.from_pretrained``.
    """
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (256 bytes + {len(SPECIAL_TOKENS)} specials)"
        )
    texts = list(default_corpus(seed=seed) if corpus is None else corpus)

    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # no BOS/EOS template, like Llama-3
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[IMAGE_TOKEN, *TEMPLATE_TOKENS],
        model_max_length=model_max_length,
        padding_side=padding_side,
    )
