"""Which LoRA adapter the shared model runs.

Many requests may share the active adapter; a switch waits until those in flight are done, so
each request finishes on the adapter it began with.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class AdapterGate:
    """A readers-by-key lock: concurrent users of one adapter, exclusive model changes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.active: str | None = None
        self.users = 0
        self._busy = False
        self._exclusive_waiting = 0
        self._waiting: Counter[str] = Counter()

    def _can_enter(self, key: str) -> bool:
        if self._busy or self._exclusive_waiting:
            return False
        if self.users == 0:
            return True
        others = sum(n for k, n in self._waiting.items() if k != key)
        return self.active == key and others == 0

    @contextmanager
    def use(self, key: str, activate: Callable[[str], None]) -> Iterator[None]:
        """Run the block with adapter `key` active; `activate` switches the model to it."""
        with self._cond:
            self._waiting[key] += 1
            try:
                self._cond.wait_for(lambda: self._can_enter(key))
            finally:
                self._waiting[key] -= 1
            if self.active != key:
                activate(key)
                self.active = key
            self.users += 1
        try:
            yield
        finally:
            with self._cond:
                self.users -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Run the block with no generation in flight (loading or evicting adapters)."""
        with self._cond:
            self._exclusive_waiting += 1
            try:
                self._cond.wait_for(lambda: self.users == 0 and not self._busy)
            finally:
                self._exclusive_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
