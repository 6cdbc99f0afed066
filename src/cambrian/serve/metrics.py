"""Prometheus metrics of one serving engine (``GET /metrics``): requests, errors, queue, batches, speed.

Each engine has its own ``CollectorRegistry`` so several servers (tests, benchmarks) can live in one
process without their counters mixing.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series only double the output; nobody graphs them

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "cambrian_requests",
            "finished generation requests by finish reason",
            ["finish_reason"],
            registry=r,
        )
        self.http_errors = Counter(
            "cambrian_http_errors", "requests refused or failed, by HTTP status", ["status"], registry=r
        )
        self.queue_length = Gauge("cambrian_queue_length", "requests waiting for the model", registry=r)
        self.running = Gauge("cambrian_running_requests", "requests in the batch being generated", registry=r)
        self.batch_size = Histogram(
            "cambrian_batch_size", "requests per batched generate", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )  # fmt: skip
        self.prompt_tokens = Counter("cambrian_prompt_tokens", "prompt tokens processed", registry=r)
        self.generated_tokens = Counter("cambrian_generated_tokens", "tokens generated", registry=r)
        self.tokens_per_second = Gauge(
            "cambrian_tokens_per_second", "generated tokens per second of the last batch", registry=r
        )
        self.latency = Histogram(
            "cambrian_request_seconds", "time from submission to the last token", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.first_token = Histogram(
            "cambrian_time_to_first_token_seconds", "time from submission to the first token", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip

    def track_queue(self, length: Callable[[], int]) -> None:
        self.queue_length.set_function(length)

    def render(self) -> bytes:
        return generate_latest(self.registry)
