"""Cheap unique ids: a random prefix drawn once per process, then a counter.

`uuid4()` reads the kernel's random source for every id, a system call that showed up
at 5 % of the gateway's CPU under load (one job id and one request id per message).
These ids need to be unique, not unguessable: nothing secret is ever built from them.
"""

from __future__ import annotations

import itertools
import os
import secrets

_state: tuple[str, itertools.count[int]] | None = None  # (random hex, counter)


def unique_id(length: int = 32) -> str:
    """Return `length` (even, >= 16) hex characters: half per-process random, half counter.

    Unique across processes and instances (a forked child draws its own prefix); with a
    16-character id the counter wraps after 4 billion ids, which suits request ids.
    """
    global _state
    if _state is None:
        _state = (secrets.token_hex(16), itertools.count(1))
    half = length // 2
    return f"{_state[0][:half]}{next(_state[1]) % (1 << (4 * half)):0{half}x}"


def _forget() -> None:
    global _state
    _state = None


os.register_at_fork(after_in_child=_forget)
