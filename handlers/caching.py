"""Memoization bounded by the size of what it holds, not only by its number of entries. Pure.

The handler caches what alerts repeat (a rule's tags, field names, rule names) across the
invocations a warm container serves. Keys come from alerts, so a hostile alert can make a key
of any size: an lru_cache of 2,048 entries of 10,000 tags each holds gigabytes. Here a call whose
arguments exceed ``max_chars`` characters in all is computed and not kept, so a cache holds at
most ``maxsize * max_chars`` characters of keys (and values derived from them).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, update_wrapper
from typing import Any, TypeVar, cast

_F = TypeVar("_F", bound=Callable[..., Any])


def size_of(value: Any) -> int:
    """Characters in a string, or in the items of a tuple of strings (plus one per item)."""
    if type(value) is str:
        return len(value)
    if type(value) is tuple:
        try:
            return sum(map(len, value)) + len(value)
        except TypeError:  # not all strings
            return sum(len(item) if type(item) is str else 1 for item in value) + len(value)
    return 1


def bounded_cache(maxsize: int, max_chars: int) -> Callable[[_F], _F]:
    """lru_cache(maxsize) for calls whose first argument (the key that comes from alerts; the
    others are small fixed values such as limits) holds at most ``max_chars`` characters; larger
    calls are computed every time. ``cache_info``/``cache_clear`` as usual."""

    def decorate(function: _F) -> _F:
        cached = lru_cache(maxsize=maxsize)(function)

        def call(key: Any, *rest: Any) -> Any:
            if (len(key) if type(key) is str else size_of(key)) > max_chars:
                return function(key, *rest)
            return cached(key, *rest)

        wrapper = update_wrapper(call, function)
        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return cast(_F, wrapper)

    return decorate
