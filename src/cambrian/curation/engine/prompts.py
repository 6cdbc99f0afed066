"""The engine's two LLM prompts (topics for a subfield; question-answer pairs for a figure) and the
checks that turn a reply into data or ``Malformed``.

Prompts ask for bare JSON; the parsers accept a fenced block or a wrapping object too, because models
add those, but anything that is not the requested shape is ``Malformed`` (re-asked, then skipped).
"""

from __future__ import annotations

from typing import Any

from cambrian.curation.engine.llm import Malformed, parse_json
from cambrian.models.tokenization import IMAGE_TOKEN

SYSTEM = (
    "You help build training data for a vision-language model from encyclopedia articles. "
    "Follow the requested output format exactly and answer with JSON only."
)


def topic_messages(field: str, subfield: str, n: int) -> list[dict[str, str]]:
    user = (
        f"Field: {field}\nSubfield: {subfield}\n\n"
        f"List {n} distinct, specific topics within this subfield that each have a Wikipedia article "
        "illustrated with informative figures (diagrams, photographs, charts). Use the article titles.\n"
        'Answer with a JSON array of strings, e.g. ["Topic one", "Topic two"].'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _unwrap_list(data: Any, keys: tuple[str, ...]) -> list[Any]:
    """A list, or the list under one of ``keys`` (or the only value) of an object."""
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), list):
                return data[key]
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    if isinstance(data, list):
        return data
    raise Malformed(f"expected a JSON array, got {type(data).__name__}")


def parse_topics(text: str, n: int) -> list[str]:
    """Up to ``n`` distinct topic names (strings, or objects with a ``topic``/``title``)."""
    items = _unwrap_list(parse_json(text), ("topics", "titles"))
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, dict):
            item = item.get("topic", item.get("title"))
        if not isinstance(item, str) or not item.strip():
            continue
        name = " ".join(item.split())[:200]
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    if not out:
        raise Malformed("no topic names (expected a JSON array of strings)")
    return out[:n]


def qa_messages(
    field: str, subfield: str, topic: str, title: str, section: str, context: str, caption: str, n: int
) -> list[dict[str, str]]:
    where = f"{title} (section: {section})" if section else title
    user = (
        f"Field: {field}\nSubfield: {subfield}\nTopic: {topic}\nArticle: {where}\n"
        f"Article text:\n{context or '(none)'}\n\n"
        f"Image caption: {caption}\n\n"
        f"Write {n} question-answer pairs about this image for a student of {subfield}. Each question "
        "must be answerable by looking at the image with the caption and text as background; answers "
        "are correct, self-contained and one to three sentences long. Do not mention 'the caption' or "
        "'the text'.\n"
        'Answer with a JSON array of objects: [{"question": "...", "answer": "..."}].'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_qas(text: str, n: int) -> tuple[list[dict[str, str]], int]:
    """Up to ``n`` ``{"question", "answer"}`` pairs and the number of items that were dropped as invalid.

    The reply is ``Malformed`` when it is not a list of objects or when no item is usable.
    """
    items = _unwrap_list(parse_json(text), ("qas", "pairs", "questions", "qa"))
    out: list[dict[str, str]] = []
    dropped = 0
    for item in items:
        q = item.get("question") if isinstance(item, dict) else None
        a = item.get("answer") if isinstance(item, dict) else None
        if not isinstance(q, str) or not isinstance(a, str):
            dropped += 1
            continue
        # The row adds its own placeholder; a stray one would break the image/placeholder count.
        q, a = q.replace(IMAGE_TOKEN, "").strip(), a.replace(IMAGE_TOKEN, "").strip()
        if not q or not a:
            dropped += 1
            continue
        out.append({"question": q, "answer": a})
    if not out:
        raise Malformed('no usable items (expected [{"question": "...", "answer": "..."}])')
    return out[:n], dropped
