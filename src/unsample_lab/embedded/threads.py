"""Pick torch's intra-op thread count by measurement, because the machine is shared.

On an idle 2-core CPU two threads are ~1.7x faster than one; when other processes hold the
cores, every parallel op waits at a barrier for a descheduled thread and two threads can be
tens of times slower than one. `ThreadTuner` keeps a moving average of step time per thread
count, re-tries the other counts for a few steps now and then, and runs the rest on the
fastest.
"""

from __future__ import annotations

import time

import torch

from unsample.errors import InputError


class ThreadTuner:
    """Chooses among ``1`` and ``max_threads`` intra-op threads from measured step times."""

    def __init__(self, max_threads: int, *, explore_every: int = 100, explore_steps: int = 4) -> None:
        if max_threads < 1:
            raise InputError(f"max_threads={max_threads}; use 1 or more")
        self.choices = sorted({1, max_threads})
        self.best = max_threads
        self.explore_every = explore_every
        self.explore_steps = explore_steps
        self.seconds: dict[int, float] = {}
        self._count = 0
        self._current = max_threads
        self._start = 0.0
        self._others: list[int] = []

    @property
    def threads(self) -> int:
        return self._current

    def _choose(self) -> int:
        # Each cycle: explore_steps on the best count, then explore_steps on each other one,
        # then the rest of the cycle on whichever is fastest now.
        phase = self._count % self.explore_every
        if phase == 0:
            self._others = [c for c in self.choices if c != self.best]
        index = phase - self.explore_steps
        if 0 <= index < self.explore_steps * len(self._others):
            return self._others[index // self.explore_steps]
        return self.best

    def start_step(self) -> None:
        threads = self._choose()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self._current = threads
        self._start = time.monotonic()

    def end_step(self) -> None:
        took = time.monotonic() - self._start
        old = self.seconds.get(self._current)
        # The first step on a new count pays for thread start-up; weight fresh data heavily.
        self.seconds[self._current] = took if old is None else 0.5 * old + 0.5 * took
        self._count += 1
        self.best = min(self.seconds, key=self.seconds.__getitem__)

    def describe(self) -> str:
        parts = ", ".join(f"{k}t={v:.3f}s" for k, v in sorted(self.seconds.items()))
        return f"threads={self.best} ({parts})"
