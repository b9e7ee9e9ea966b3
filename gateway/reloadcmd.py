"""`byoc-gateway reload`: signal a running gateway (SIGHUP); with --wait, report the outcome.

The outcome is read from the gateway's `/status.json` (admin token: `BYOC_ADMIN_TOKEN`,
or `admin_token` of the --config file): the `last_reload` before the signal is noted,
then the page is polled until it changes or --timeout passes. Exit codes: 0 signalled
(with --wait: reloaded); 1 no such process, the reload failed (the running configuration
stays) or no outcome in time; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
DEFAULT_PID_FILE = Path("data/gateway.pid")
POLL_INTERVAL = 0.2


class ReloadCommandError(Exception):
    """Something `reload` cannot do; `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_PROBLEMS) -> None:
        super().__init__(message)
        self.code = code


def add_commands(sub: Any) -> None:
    """Register `reload`."""
    r = sub.add_parser(
        "reload",
        help="ask a running gateway to reload (SIGHUP); --wait for the outcome",
        description="Send SIGHUP to a running gateway: it re-reads gateway.yaml, the mappings "
        "and every file they reference, and swaps them in only if all of it is valid.",
    )
    who = r.add_mutually_exclusive_group()
    who.add_argument(
        "--pid-file",
        type=Path,
        default=None,
        help=f"the file `serve --pid-file` wrote (default {DEFAULT_PID_FILE})",
    )
    who.add_argument("--pid", type=int, default=None, help="the gateway's process id")
    r.add_argument(
        "--wait",
        action="store_true",
        help="wait for the outcome (from /status.json) and exit 1 if it failed",
    )
    r.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="gateway.yaml: where the CXone-side listener is, and the admin token",
    )
    r.add_argument(
        "--url", default=None, help="base URL of the CXone-side listener (default: from --config)"
    )
    r.add_argument("--cafile", type=Path, default=None, help="CA to trust for an https --url")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Signal the gateway and, with --wait, report how the reload went."""
    try:
        return _run(args)
    except ReloadCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def _run(args: argparse.Namespace) -> int:
    pid = args.pid if args.pid is not None else _read_pid(args.pid_file or DEFAULT_PID_FILE)
    if not args.wait:
        _signal(pid)
        print(f"sent SIGHUP to {pid}; see the gateway's log or /status.json for the outcome")
        return EXIT_OK
    if args.timeout <= 0:
        raise ReloadCommandError("--timeout must be positive", EXIT_USAGE)
    status = StatusPage(*_where(args))
    before = status.last_reload()  # fails before signalling: no reload nobody can see
    _signal(pid)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            after = status.last_reload()
        except ReloadCommandError:
            after = before  # the page may be busy for a moment; keep polling until the deadline
        if after is not None and after != before:
            break
        if time.monotonic() > deadline:
            raise ReloadCommandError(
                f"sent SIGHUP to {pid} but {status.url} showed no reload outcome within "
                f"{args.timeout:g} s (is {pid} the gateway behind that URL?)"
            )
        time.sleep(POLL_INTERVAL)  # a CLI polling a remote page, not a test synchronising
    if args.format == "json":
        print(json.dumps(after, indent=2))
    else:
        print(describe(after, pid))
    return EXIT_OK if after.get("ok") else EXIT_PROBLEMS


def describe(result: dict[str, Any], pid: int) -> str:
    """A reload outcome (a `last_reload` of /status.json) for a terminal."""
    if result.get("ok"):
        lines = [f"reloaded: generation {result.get('generation')} is in service (pid {pid})"]
        lines += [f"  mapping {name} version {v}" for name, v in result.get("versions", {}).items()]
        changes = result.get("changes") or {}
        moved = [f"  {kind}: {path}" for kind, paths in changes.items() for path in paths]
        lines += moved or ["  no file changed"]
        return "\n".join(lines)
    lines = [f"reload failed: the running configuration stays in service (pid {pid})"]
    lines += [f"  {e}" for e in result.get("errors", [])]
    return "\n".join(lines)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        raise ReloadCommandError(
            f"no running gateway found (cannot read a pid from {path}); start it with "
            "`serve --pid-file`, or pass --pid"
        ) from None


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadCommandError(f"no process {pid}") from None
    except PermissionError:
        raise ReloadCommandError(f"not allowed to signal process {pid}") from None


def _where(args: argparse.Namespace) -> tuple[str, str, ssl.SSLContext | None]:
    """The status page's base URL, the admin token and the TLS context to reach it."""
    settings = None
    if args.config is not None:
        from gateway.errors import ConfigError
        from gateway.settings_loader import load_settings

        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            raise ReloadCommandError(f"cannot read {args.config}: {exc}") from None
    token = os.environ.get("BYOC_ADMIN_TOKEN") or (
        settings.admin_token.reveal() if settings and settings.admin_token else None
    )
    if not token:
        raise ReloadCommandError(
            "--wait reads /status.json, which needs the admin token: set BYOC_ADMIN_TOKEN or "
            "pass --config with an admin_token",
            EXIT_USAGE,
        )
    url = args.url
    if url is None:
        if settings is None:
            raise ReloadCommandError("--wait needs --url or --config", EXIT_USAGE)
        listener = settings.cxone_listener
        if listener.tls is not None and listener.tls.client_ca is not None:
            raise ReloadCommandError(
                "the CXone-side listener asks for client certificates (mTLS); check "
                "/status.json yourself, or drop --wait",
                EXIT_USAGE,
            )
        host = "127.0.0.1" if listener.host in ("", "0.0.0.0", "::") else listener.host
        scheme = "https" if listener.tls is not None else "http"
        url = f"{scheme}://{host}:{listener.port}"
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(args.cafile) if args.cafile else None)
    return url.rstrip("/"), token, context


class StatusPage:
    """Reads `last_reload` from a gateway's /status.json."""

    def __init__(self, base: str, token: str, context: ssl.SSLContext | None) -> None:
        self.url = base + "/status.json"
        self._token = token
        self._context = context

    def last_reload(self) -> dict[str, Any] | None:
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked below
            self.url, headers={"Authorization": f"Bearer {self._token}"}
        )
        if not self.url.startswith(("http://", "https://")):
            raise ReloadCommandError(f"{self.url}: only http and https URLs", EXIT_USAGE)
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._context) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            hint = " (wrong admin token?)" if exc.code == 401 else ""
            raise ReloadCommandError(f"{self.url} answered HTTP {exc.code}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ReloadCommandError(f"cannot read {self.url}: {reason}") from None
        result = body.get("last_reload") if isinstance(body, dict) else None
        return result if isinstance(result, dict) else None
