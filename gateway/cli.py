"""The byoc-gateway command line. The only place errors become exit codes.

Exit codes: 0 success; 1 a check or command found problems; 2 usage error;
3 the gateway could not start (configuration, ports, store).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.errors import ConfigError, GatewayError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_START = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="byoc-gateway",
        description="A declarative NICE CXone Bring-Your-Own-Channel middleware.",
    )
    p.add_argument("--version", action="version", version=f"byoc-gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", "-c", type=Path, default=Path("gateway.yaml"))
    s.add_argument("--pid-file", type=Path, default=None, help="write the PID here (for `reload`)")
    s.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop: uvloop when installed (auto), or force one",
    )

    c = sub.add_parser("check", help="validate mappings and gateway.yaml; run inline tests")
    c.add_argument(
        "paths", nargs="*", type=Path, help="mapping files or directories (default: mappings/)"
    )
    c.add_argument("--config", "-c", type=Path, default=None, help="also check this gateway.yaml")
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.add_argument(
        "--no-secrets",
        action="store_true",
        help="only check that secrets are referenced, not that they are set",
    )

    sim = sub.add_parser("sim", help="run a simulator on its own")
    sim.add_argument("which", choices=["cxone", "watering-hole"])
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument(
        "--port", type=int, default=None, help="default 8091 (cxone), 8090 (watering-hole)"
    )

    sb = sub.add_parser(
        "sandbox", help="gateway + simulated CXone + simulated Watering Hole, with a page"
    )
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8000, help="port of the sandbox page")
    sb.add_argument("--mappings", type=Path, default=None)

    # Command groups that live in their own modules: each exposes
    # `add_commands(subparsers)`, which registers its parsers with `set_defaults(run=...)`.
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return p


_COMMAND_MODULES = (
    "gateway.certscmd",
    "gateway.trycmd",
    "gateway.reloadcmd",
    "gateway.deadletters",
    "gateway.channels",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_START if args.command in ("serve", "sandbox") else EXIT_PROBLEMS
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START


def _dispatch(args: argparse.Namespace) -> int:
    run = getattr(args, "run", None)
    if run is not None:
        code: int = run(args)
        return code
    cmd = args.command
    if cmd == "serve":
        return _serve(args)
    if cmd == "check":
        return _check(args)
    if cmd == "sim":
        return _sim(args)
    if cmd == "sandbox":
        from gateway.sandbox.run import run_sandbox

        asyncio.run(run_sandbox(args.host, args.port, mappings=args.mappings))
        return EXIT_OK
    return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.server import run
    from gateway.settings_loader import load_settings

    settings = load_settings(args.config)
    configure_logging(settings.logging.level, settings.logging.format)
    pid_file: Path | None = args.pid_file
    try:
        run(settings, loop=args.loop, pid_file=pid_file)
    except OSError as exc:
        print(f"error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_START
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from gateway import jsonutil
    from gateway.mapping.check import check_paths, format_report
    from gateway.settings_loader import check_settings_file

    paths = list(args.paths) or [Path("mappings")]
    report = check_paths(paths, check_secrets=not args.no_secrets)
    ok = report.ok
    problems = []
    certificates = None
    if args.config is not None:
        problems = check_settings_file(args.config, check_secrets=not args.no_secrets)
        if not problems and not args.no_secrets:  # key passwords are secrets
            from gateway.certwatch import check_certificates_file

            certificates = check_certificates_file(args.config)
            problems += certificates.problems
        ok = ok and not problems
    if args.format == "json":
        data = jsonutil.loads(format_report(report, "json"))
        if args.config is not None:
            data["files"].append(
                {
                    "path": str(args.config),
                    "mapping": None,
                    "ok": not problems,
                    "problems": [p.as_dict() for p in problems],
                    "tests": {"run": 0, "failed": 0, "failures": []},
                    **(certificates.as_dict() if certificates is not None else {}),
                }
            )
        data["ok"] = ok
        print(jsonutil.dumps_str(data))
    else:
        out = format_report(report, "text")
        if args.config is not None:
            status = "ok     " if not problems else "FAILED "
            out += f"\n{status} {args.config}" + "".join(f"\n  {p}" for p in problems)
            if certificates is not None:
                out += "".join(f"\n  {line}" for line in certificates.lines())
        print(out)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _sim(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging

    configure_logging("INFO", "text")
    if args.which == "cxone":
        from gateway.sandbox.cxone import run_standalone as run_cxone

        port = 8091 if args.port is None else args.port
        print(f"simulated CXone on http://{args.host}:{port} (control API under /_sim/)")
        asyncio.run(run_cxone(args.host, port))
    else:
        from gateway.sandbox.watering_hole import run_standalone as run_wh
        from gateway.sandbox.watering_hole.standalone import config_from_env

        port = 8090 if args.port is None else args.port
        print(
            f"simulated Watering Hole on http://{args.host}:{port} (API under /v1, control under"
            " /_sim/); credentials from WATERING_HOLE_TOKEN, WH_SECRET, WH_VERIFY_TOKEN"
        )
        asyncio.run(run_wh(args.host, port, config_from_env(os.environ)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
