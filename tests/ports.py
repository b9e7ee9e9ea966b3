"""Ports for child processes to listen on (the tests' and the benchmark's)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """Return a port that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel handed out for a bind to port 0 is an ephemeral one: between this
    call and the child's bind, an outgoing connection could be given it (seen in CI as
    "address already in use"). Ports below the ephemeral range are only ever taken by
    an explicit bind.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found between 10000 and {low}")


def _ephemeral_low() -> int:
    """The lowest ephemeral port (Linux: net.ipv4.ip_local_port_range; else 32768)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return max(low, 10_001)
