"""One generic exact-id registry used by every component family (towers, connectors, presets, templates).

Lookups are by exact id only: no substring or prefix matching, so the result never depends on the
order in which things were registered. An unknown id raises ``UnknownIdError`` listing the valid ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownIdError(KeyError):
    """Raised when an id is not registered; the message lists every valid id."""

    def __init__(self, kind: str, name: object, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind} ids: {', '.join(valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class Registry(Generic[T]):
    """Maps exact string ids to objects (classes, factories, presets)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` it works as a decorator."""

        def _add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} id {name!r} is already registered")
            self._items[name] = item
            return item

        return _add(obj) if obj is not None else _add

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (plugins and tests that registered something temporarily)."""
        if name not in self._items:
            raise UnknownIdError(self.kind, name, self.names())
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownIdError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
