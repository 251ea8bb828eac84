"""The one per-process cache: a model, a scorer or a query encoder built once per worker process and reused.

Executors run many tasks in one Python worker, and notebooks call search many times: loading a model per task or per
call would dominate. One slot per cache name: building a value for a new key frees the old value first, so a process
never holds two models of one kind.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, TypeVar

V = TypeVar("V")

_SLOTS: dict[str, tuple[Hashable, Any]] = {}
_LOCK = threading.Lock()


def cached(name: str, key: Hashable, build: Callable[[], V]) -> V:
    """The value cached under ``name`` for ``key``; ``build()`` makes it (once) when the slot holds another key."""
    with _LOCK:
        slot = _SLOTS.get(name)
        if slot is not None and slot[0] == key:
            return slot[1]
        _SLOTS.pop(name, None)        # free the old value before building the new one
    value = build()
    with _LOCK:
        _SLOTS[name] = (key, value)
    return value


def clear(name: str | None = None) -> None:
    """Drop one cache (or all of them)."""
    with _LOCK:
        if name is None:
            _SLOTS.clear()
        else:
            _SLOTS.pop(name, None)
