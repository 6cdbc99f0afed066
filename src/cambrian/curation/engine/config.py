"""The Internet Data Engine's configuration: typed dataclasses, YAML/JSON + overrides + environment.

``resolve_config(path, overrides, llm_url=..., ...)`` merges, lowest first: the defaults, the
environment (LLM endpoint and model), the config file, ``key.sub=value`` overrides, then explicit
arguments (the CLI's ``--llm-url`` etc.), and checks the result. The API key is never part of the
config (it would be saved next to the data): ``ChatClient`` reads it from the environment.

A config file looks like::

    fields:                         # field -> subfields; topics are generated per subfield
      Physics: [Optics, Thermodynamics]
      Biology: [Genetics]
    topics_per_subfield: 10
    pages_per_topic: 2
    llm: {model: gpt-4o-mini, concurrency: 8, rps: 4}
    wiki: {url: https://en.wikipedia.org/w/api.php}   # or {dump: /data/wiki_dump}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cambrian.utils.config import ConfigError, from_dict, merge, with_overrides

LLM_URL_ENV = ("CAMBRIAN_ENGINE_LLM_URL", "OPENAI_BASE_URL")
LLM_MODEL_ENV = ("CAMBRIAN_ENGINE_LLM_MODEL",)
LLM_KEY_ENV = ("CAMBRIAN_ENGINE_LLM_KEY", "OPENAI_API_KEY")
WIKIPEDIA_API = "https://en.wikipedia.org/w/api.php"
# Wikimedia asks for a descriptive User-Agent with a way to reach the operator; set wiki.user_agent to yours.
DEFAULT_USER_AGENT = "cambrian-data-engine/0.1 (Cambrian-1 Internet Data Engine; python-urllib)"


@dataclass
class ClientConfig:
    """How one HTTP client behaves: timeouts, retries, rate limit, parallel requests."""

    timeout: float = 60.0  # seconds per request (connect + each read)
    retries: int = 5  # extra attempts on connection errors, timeouts, 429 and 5xx
    backoff: float = 1.0  # first retry waits about this long (seconds), doubling each time, with jitter
    max_backoff: float = 60.0  # cap on one wait; also the cap on an honoured Retry-After
    rps: float = 0.0  # requests per second over all threads (token bucket); 0 = unlimited
    concurrency: int = 4  # threads issuing requests at once


@dataclass
class LLMConfig(ClientConfig):
    """An OpenAI-compatible chat-completions endpoint (POST {url}/chat/completions)."""

    url: str | None = None  # base URL, e.g. https://api.openai.com/v1 [env CAMBRIAN_ENGINE_LLM_URL]
    model: str | None = None  # [env CAMBRIAN_ENGINE_LLM_MODEL]
    temperature: float = 0.2
    max_tokens: int = 1024
    timeout: float = 120.0
    concurrency: int = 8


@dataclass
class WikiConfig(ClientConfig):
    """Where pages come from: a MediaWiki API (``url``) or, when ``dump`` is set, a local dump folder."""

    url: str = WIKIPEDIA_API
    dump: str | None = None  # a local dump directory (pages.jsonl + images/); used instead of url
    user_agent: str = DEFAULT_USER_AGENT
    timeout: float = 30.0
    rps: float = 5.0  # be polite to Wikipedia
    concurrency: int = 2
    max_image_bytes: int = 25_000_000


@dataclass
class EngineConfig:
    """The whole run: which fields, how much of everything, and the two services."""

    fields: dict[str, list[str]] = field(default_factory=dict)  # field -> list of subfields
    topics_per_subfield: int = 10
    pages_per_topic: int = 2
    images_per_page: int = 3
    qas_per_image: int = 2
    category: str = "Science"  # written into every row
    min_image_side: int = 100  # pixels; smaller images (icons, flags, bullets) are rejected
    max_image_side: int = 1024  # larger images are downscaled before saving
    context_chars: int = 1500  # page text given to the LLM next to each caption
    malformed_retries: int = 2  # re-asks after unusable LLM output before the unit is skipped
    seed: int = 0  # jitter of retry waits
    llm: LLMConfig = field(default_factory=LLMConfig)
    wiki: WikiConfig = field(default_factory=WikiConfig)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a value is out of range or a service is unset."""
        if not isinstance(self.fields, Mapping) or not self.fields:
            raise ConfigError("fields: give at least one field with its subfields, e.g. {Physics: [Optics]}")
        for name, subs in self.fields.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"fields: field names must be non-empty strings, got {name!r}")
            if (
                isinstance(subs, (str, bytes))
                or not isinstance(subs, Sequence)
                or not subs
                or not all(isinstance(s, str) and s.strip() for s in subs)
            ):
                raise ConfigError(f"fields.{name}: expected a non-empty list of subfield names, got {subs!r}")
        for key in ("topics_per_subfield", "pages_per_topic", "images_per_page", "qas_per_image"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.min_image_side < 1 or self.max_image_side < self.min_image_side:
            raise ConfigError(
                f"min_image_side/max_image_side: need 1 <= min <= max, got {self.min_image_side}, "
                f"{self.max_image_side}"
            )
        for key in ("context_chars", "malformed_retries"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        for prefix, client in (("llm", self.llm), ("wiki", self.wiki)):
            for key in ("timeout", "retries", "backoff", "max_backoff", "rps"):
                if getattr(client, key) < 0:
                    raise ConfigError(f"{prefix}.{key}: must be >= 0, got {getattr(client, key)}")
            if client.concurrency < 1:
                raise ConfigError(f"{prefix}.concurrency: must be at least 1, got {client.concurrency}")
        if not self.llm.url:
            raise ConfigError(
                "llm.url: no LLM endpoint; set " + " or ".join(LLM_URL_ENV) + ", llm.url in the config, "
                "or --llm-url (an OpenAI-compatible base URL such as https://api.openai.com/v1)"
            )
        if not self.llm.url.startswith(("http://", "https://")):
            raise ConfigError(f"llm.url: expected an http(s) URL, got {self.llm.url!r}")
        if not self.llm.model:
            raise ConfigError(
                "llm.model: no model name; set " + " or ".join(LLM_MODEL_ENV) + ", llm.model in the config, "
                "or --llm-model"
            )
        if self.wiki.dump is not None:
            if not Path(self.wiki.dump).is_dir():
                raise ConfigError(f"wiki.dump: {self.wiki.dump} is not a directory")
            if not (Path(self.wiki.dump) / "pages.jsonl").is_file():
                raise ConfigError(f"wiki.dump: {self.wiki.dump} has no pages.jsonl")
        elif not self.wiki.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"wiki.url: expected an http(s) URL of a MediaWiki api.php, got {self.wiki.url!r}"
            )


def _first_env(names: Sequence[str], env: Mapping[str, str]) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def resolve_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    llm_url: str | None = None,
    llm_model: str | None = None,
    wiki_url: str | None = None,
    wiki_dump: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> EngineConfig:
    """Defaults <- environment <- config file <- overrides <- arguments, checked into an ``EngineConfig``."""
    env = os.environ if env is None else env
    if wiki_url is not None and wiki_dump is not None:
        raise ConfigError("give either a wiki URL (--wiki-url) or a local dump (--wiki-dump), not both")
    data: dict[str, Any] = {"llm": {}}
    if url := _first_env(LLM_URL_ENV, env):
        data["llm"]["url"] = url
    if model := _first_env(LLM_MODEL_ENV, env):
        data["llm"]["model"] = model
    data = with_overrides(data, path, overrides)
    explicit: dict[str, Any] = {"llm": {}, "wiki": {}}
    if llm_url is not None:
        explicit["llm"]["url"] = llm_url
    if llm_model is not None:
        explicit["llm"]["model"] = llm_model
    if wiki_url is not None:
        explicit["wiki"].update(url=wiki_url, dump=None)
    if wiki_dump is not None:
        explicit["wiki"]["dump"] = str(wiki_dump)
    data = merge(data, explicit)
    cfg = from_dict(EngineConfig, data)
    cfg.validate()
    return cfg


def llm_key(env: Mapping[str, str] | None = None) -> str | None:
    """The API key from the environment (none is fine for local servers such as vLLM or llama.cpp)."""
    return _first_env(LLM_KEY_ENV, os.environ if env is None else env)
