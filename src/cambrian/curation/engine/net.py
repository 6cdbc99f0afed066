"""HTTP for the data engine: retries with backoff, a shared rate limit, timeouts and request counters.

Standard library only (``urllib.request``): the engine talks to two services (the LLM and the wiki)
and both need the same care: retry what is transient (connection errors, timeouts, 429, 5xx) after
an exponentially growing wait with jitter (or the server's ``Retry-After``), fail fast on everything
else, and never exceed the configured requests per second, however many threads share the client.
"""

from __future__ import annotations

import email.utils
import http.client
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

# 408 and 425 are "try again" by definition; 429 is the rate limit; 5xx are the server's problem.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


class HttpError(Exception):
    """A request failed for good: a non-retryable status, or retries ran out. ``status`` is None for
    connection-level failures."""

    def __init__(self, message: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class Counters:
    """Thread-safe named counts (requests, retries, ...) that end up in ``stats.json``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class RateLimiter:
    """A token bucket shared by threads: at most ``rps`` requests per second, bursts up to ``burst``.

    A caller that finds the bucket empty reserves the next token (the count goes negative) and sleeps
    until it is due, so waiting threads are served in turn instead of all waking at once.
    """

    def __init__(
        self,
        rps: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rps = rps
        self.capacity = max(1.0, burst if burst is not None else 1.0)
        self._tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping as needed; returns the seconds waited."""
        if self.rps <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """GET/POST with retries, a token-bucket rate limit and counters under ``{name}.requests`` etc.

    Nothing is opened until the first request; one client is shared by all threads of a stage.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        rps: float,
        counters: Counters,
        seed: int = 0,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = 50_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.limiter = RateLimiter(rps, burst=max(1.0, rps))
        self.counters = counters
        self.headers = dict(headers or {})
        self.max_bytes = max_bytes
        self._sleep = sleep
        # Jitter comes from a seeded generator so a run's waits are reproducible given its thread schedule.
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._opener = urllib.request.build_opener()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.max_backoff, self.backoff * 2**attempt)
        with self._rng_lock:
            u = self._rng.random()
        return base / 2 + u * base / 2  # "equal jitter": spreads threads that failed together

    def request(
        self,
        url: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """The response body of a GET (``data`` None) or POST; raises ``HttpError`` when it gives up."""
        max_bytes = self.max_bytes if max_bytes is None else max_bytes
        all_headers = {**self.headers, **(headers or {})}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.add(f"{self.name}.retries")
            self.limiter.acquire()
            self.counters.add(f"{self.name}.requests")
            req = urllib.request.Request(
                url, data=data, headers=all_headers, method="POST" if data else "GET"
            )
            retry_after = None
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    body = resp.read(max_bytes + 1)
                if len(body) > max_bytes:
                    self.counters.add(f"{self.name}.errors")
                    raise HttpError(f"{url}: response larger than {max_bytes} bytes", status=413, url=url)
                return body
            except urllib.error.HTTPError as e:
                status = e.code
                detail = e.read(500).decode("utf-8", "replace") if e.fp is not None else ""
                e.close()
                last = f"HTTP {status} {e.reason}: {detail.strip()[:200]}"
                if status not in RETRY_STATUS:
                    self.counters.add(f"{self.name}.errors")
                    raise HttpError(f"{url}: {last}", status=status, url=url) from None
                retry_after = _retry_after(e.headers)
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
            except (http.client.HTTPException, OSError) as e:  # truncated or garbled responses
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                self._sleep(self._delay(attempt, retry_after))
        self.counters.add(f"{self.name}.errors")
        raise HttpError(f"{url}: gave up after {self.retries + 1} attempts; last error: {last}", url=url)
