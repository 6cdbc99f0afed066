"""A client for any OpenAI-compatible chat-completions endpoint, and re-asking on unusable output.

``ChatClient.complete(messages)`` POSTs ``{model, messages, temperature, max_tokens}`` to
``{url}/chat/completions`` and returns ``choices[0].message.content``. ``ChatClient.ask(messages, parse)``
adds the engine's policy for malformed output: when ``parse`` raises ``Malformed`` the model is shown
its answer and the problem and asked again, a bounded number of times; then the unit is given up
(``None``) and counted, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from cambrian.curation.engine.config import DEFAULT_USER_AGENT, LLMConfig, llm_key
from cambrian.curation.engine.net import Counters, HttpClient

T = TypeVar("T")
# urllib's default "Python-urllib/3.x" is refused by some API gateways.
USER_AGENT = DEFAULT_USER_AGENT.split(" ", 1)[0]


class Malformed(ValueError):
    """The LLM's answer cannot be used (not JSON, wrong shape, missing fields); the message says why."""


def chat_url(base: str) -> str:
    """``https://host/v1`` -> ``https://host/v1/chat/completions`` (a full endpoint URL is kept)."""
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


class ChatClient:
    """Chat completions over ``HttpClient`` (so retries, rate limit and counters under ``llm.*``)."""

    def __init__(self, cfg: LLMConfig, counters: Counters, *, key: str | None = None, seed: int = 0) -> None:
        self.cfg = cfg
        self.counters = counters
        self.url = chat_url(cfg.url or "")
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        key = key if key is not None else llm_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.http = HttpClient(
            "llm", timeout=cfg.timeout, retries=cfg.retries, backoff=cfg.backoff, max_backoff=cfg.max_backoff,
            rps=cfg.rps, counters=counters, seed=seed, headers=headers,
        )  # fmt: skip

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply text; ``Malformed`` when the response is not a chat completion."""
        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        raw = self.http.request(self.url, data=json.dumps(body).encode())
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise Malformed(f"not a chat completion response ({type(e).__name__}): {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise Malformed(f"message content is {type(content).__name__}, not text")
        return content

    def ask(
        self, messages: list[dict[str, str]], parse: Callable[[str], T], stage: str, retries: int
    ) -> T | None:
        """``parse(reply)``, re-asking up to ``retries`` times on ``Malformed``; None (counted) if it never fits.

        Counts go to ``{stage}.malformed_retries`` (re-asks) and ``{stage}.malformed_skipped`` (given up).
        """
        convo = list(messages)
        for attempt in range(retries + 1):
            reply = ""
            try:
                reply = self.complete(convo)
                return parse(reply)
            except Malformed as e:
                if attempt == retries:
                    self.counters.add(f"{stage}.malformed_skipped")
                    return None
                self.counters.add(f"{stage}.malformed_retries")
                # Repeating the same request to a low-temperature model tends to repeat the same mistake;
                # showing it the problem fixes most format slips.
                fix = f"That answer was unusable: {e}. Reply again with only the JSON."
                convo = (
                    [
                        *messages,
                        {"role": "assistant", "content": reply[:4000]},
                        {"role": "user", "content": fix},
                    ]
                    if reply
                    else list(messages)  # the response itself was broken: just ask again
                )
        return None  # unreachable; keeps type checkers calm


def parse_json(text: str) -> Any:
    """JSON from an LLM reply, tolerating a ```json fence or prose around one object/array."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        return json.loads(text)
    except ValueError:
        pass
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(text.rfind("]"), text.rfind("}"))
        if end > start:
            try:
                return json.loads(text[start : end + 1])
            except ValueError:
                pass
    raise Malformed(f"not valid JSON: {text[:120]!r}")
