"""The Internet Data Engine (Cambrian-1): fields -> topics -> wiki pages -> figures -> VQA rows.

An LLM (any OpenAI-compatible chat endpoint) proposes topics per subfield and writes question-answer
pairs about each figure; a wiki (the MediaWiki API, Wikipedia by default, or a local dump) supplies
pages, captions, section text and images. ``resolve_config`` builds the config, ``run_engine`` runs it;
``cambrian data engine CONFIG --out DIR`` is the command line. Importing this package starts nothing.
"""

from __future__ import annotations

from cambrian.curation.engine.config import EngineConfig, LLMConfig, WikiConfig, resolve_config
from cambrian.curation.engine.pipeline import Engine, EngineResult, run_engine
from cambrian.curation.engine.stages import EngineAbort
from cambrian.curation.outputs import OutputOverlapError

__all__ = [
    "Engine",
    "EngineAbort",
    "EngineConfig",
    "EngineResult",
    "LLMConfig",
    "OutputOverlapError",
    "WikiConfig",
    "resolve_config",
    "run_engine",
]
