"""The exact-id registry every component family uses: exact lookups, clear unknown-id errors, removal."""

from __future__ import annotations

import pytest

from cambrian.registry import Registry, UnknownIdError


def test_exact_ids_only_and_unknown_id_lists_valid_ids():
    reg: Registry[int] = Registry("widget")
    reg.register("siglip", 1)
    reg.register("siglip-so400m", 2)
    assert reg.get("siglip") == 1 and reg.get("siglip-so400m") == 2
    with pytest.raises(
        UnknownIdError, match=r"unknown widget 'sig'; valid widget ids: siglip, siglip-so400m"
    ):
        reg.get("sig")  # a prefix is not an id
    with pytest.raises(ValueError, match="already registered"):
        reg.register("siglip", 3)


def test_decorator_registration_and_unregister():
    reg: Registry[type] = Registry("thing")

    @reg.register("a")
    class A:
        pass

    assert "a" in reg and list(reg) == ["a"] and len(reg) == 1
    assert reg.unregister("a") is A
    assert "a" not in reg and len(reg) == 0
    with pytest.raises(UnknownIdError, match="unknown thing 'a'"):
        reg.unregister("a")
    reg.register("a", A)  # the id is free again
    assert reg.get("a") is A
