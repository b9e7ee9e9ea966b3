"""Run `byoc-gateway` on a chosen event loop when the CLI has no `--loop` flag yet.

    python -m bench.launch --loop uvloop -- serve --config gateway.yaml

With `--loop uvloop` it sets uvloop's event loop policy, so the CLI's own
`asyncio.run(serve(...))` runs on uvloop; then it runs exactly the CLI's `main`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.cli import main as cli_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main())
