"""Waiting in tests: one helper for "until this holds", none of fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.5,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    AssertionError naming ``what`` (and the last value seen) when ``timeout`` seconds pass first.
    A check that raises AssertionError counts as "not yet" (so assertions can be the check).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            found = check()
        except AssertionError as problem:
            found, last = None, problem
        else:
            last = found
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)
