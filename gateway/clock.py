"""Injectable clocks, so that nothing in tests has to sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


# Unix time in seconds: the builtin itself, not a function around it (the clock is read
# about ten times per message)
system_clock: Clock = time.time


class FakeClock:
    """A clock that moves only when told to (for tests and simulators)."""

    def __init__(self, start: float = 1_764_158_400.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
