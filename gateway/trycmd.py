"""`byoc-gateway try`: run one sample payload through a mapping and show what would be sent.

Nothing is sent: the mapping is loaded as `serve` loads it (secrets from the environment,
or placeholders like `check --no-secrets` when some are not set), the payload is split
and routed, and the exact requests are printed. Exit codes: 0 every item routed (an
`ignore` route counts), 1 a mapping problem, no route or a rejected call, 2 a usage or
input error (unreadable file, invalid JSON, bad K=V).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.dryrun import (
    inbound_item,
    load_for_dry_run,
    outbound_call,
    reply_view,
    secret_masker,
)
from gateway.errors import GatewayError, MappingError, RequestError
from gateway.mapping import CompiledMapping, OutboundContext, PlatformResponse
from gateway.trytext import render_text

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}


class InputError(Exception):
    """The operator's input (a file, a K=V) is unusable: exit 2."""


def add_commands(sub: Any) -> None:
    """Register `try`."""
    p = sub.add_parser(
        "try",
        help="show the route and the exact requests for a sample payload (sends nothing)",
        description="Run one sample payload through a mapping: which route matches (or why "
        "none does) and the exact requests the gateway would send. Nothing is sent.",
    )
    p.add_argument("mapping", type=Path, help="the mapping file")
    way = p.add_mutually_exclusive_group(required=True)
    for name, text in (
        ("inbound", "a webhook delivery from the platform"),
        ("outbound", "a call from CXone (reply, or sender action with --endpoint)"),
        ("handshake", "a subscription handshake (query from --query; body from --file)"),
    ):
        way.add_argument(f"--{name}", dest="direction", action="store_const", const=name, help=text)
    p.add_argument(
        "--file",
        "-f",
        default=None,
        help="the sample payload ('-' or none: stdin; handshake: no body)",
    )
    p.add_argument("--channel", help="outbound: the channel role (default: the only one)")
    p.add_argument("--channel-id", default="try-channel", help="outbound: the CXone channel id")
    p.add_argument(
        "--endpoint",
        choices=["outbound", "legacy", "sender_action"],
        default="outbound",
        help="outbound: which BYOC endpoint CXone called",
    )
    p.add_argument(
        "--params",
        nargs="+",
        action="extend",
        default=[],
        metavar="K=V",
        help="outbound: URL parameters (threadId, postId, channelId)",
    )
    p.add_argument(
        "--header",
        nargs="+",
        action="extend",
        default=[],
        metavar="K=V",
        help="inbound/handshake: request headers",
    )
    p.add_argument(
        "--query",
        nargs="+",
        action="extend",
        default=[],
        metavar="K=V",
        help="inbound/handshake: query parameters",
    )
    p.add_argument("--method", default=None, help="handshake: GET (default) or POST")
    p.add_argument("--content-type", default=None, help="inbound: override the content type")
    p.add_argument(
        "--platform-response",
        type=Path,
        default=None,
        metavar="F",
        help="outbound: the platform's answer ({status, headers, body} or a list)",
    )
    p.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="KEY=VALUE lines added to the environment for ${VAR} references",
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `try` and print the report; return the exit code."""
    try:
        env = {**os.environ, **(_env_file(args.env_file) if args.env_file else {})}
        report = _try(args, env)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MappingError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    out = (
        json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str)
        if args.format == "json"
        else render_text(report)
    )
    print(secret_masker(report.mapping, report.secrets, env).redact(out))
    return EXIT_OK if report.ok else EXIT_PROBLEMS


# --------------------------------------------------------------------------- loading


@dataclass
class Report:
    """What `try` found; `as_dict` is the --format json output."""

    mapping: CompiledMapping
    secrets: str  # "environment", "partial" or "placeholders" (see gateway.dryrun.load_for_dry_run)
    missing: list[str]
    direction: str
    notes: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    handshake: dict[str, Any] | None = None
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        m = self.mapping
        return {
            "ok": self.ok,
            "mapping": {"name": m.name, "file": m.source, "version": m.version},
            "secrets": {"mode": self.secrets, "missing": self.missing},
            "direction": self.direction,
            "notes": self.notes,
            "handshake": self.handshake,
            "items": self.items,
        }


def _try(args: argparse.Namespace, env: Mapping[str, str]) -> Report:
    if not args.mapping.is_file():
        raise InputError(f"{args.mapping}: no such mapping file")
    mapping, mode, missing = load_for_dry_run(args.mapping, env)
    report = Report(mapping, mode, missing, args.direction)
    if args.direction == "inbound":
        _inbound(report, args)
    elif args.direction == "outbound":
        _outbound(report, args)
    else:
        _handshake(report, args)
    return report


def _read(spec: str | None, what: str) -> bytes:
    if spec is None or spec == "-":
        if sys.stdin.isatty():
            print(f"reading the {what} from stdin (end with Ctrl-D)", file=sys.stderr)
        return sys.stdin.buffer.read()
    try:
        return Path(spec).read_bytes()
    except OSError as exc:
        raise InputError(f"{spec}: cannot read the {what} ({exc.strerror})") from None


def _json(raw: bytes, source: str) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {value!r} is not K=V")
        out[key] = rest
    return out


def _env_file(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the env file ({exc.strerror})") from None
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        text = text.removeprefix("export ").strip()
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


# --------------------------------------------------------------------------- inbound


def _inbound(report: Report, args: argparse.Namespace) -> None:
    m = report.mapping
    source = args.file if args.file not in (None, "-") else "stdin"
    raw = _read(args.file, "payload")
    if m.webhook.format == "json" and args.content_type is None:
        _json(raw, source)  # for a located error; the gateway's own parser runs below
    headers = {k.lower(): v for k, v in _pairs(args.header, "--header").items()}
    query = _pairs(args.query, "--query")
    content_type = args.content_type or _CONTENT_TYPES.get(m.webhook.format, "application/json")
    try:
        payload = m.parse_body(raw, content_type)
    except RequestError as exc:
        raise InputError(f"{source}: {exc.message}") from None
    report.notes.append("the webhook signature is not checked; nothing is sent")
    reply = m.handshake("POST", query, headers, payload)
    if reply is not None:
        report.handshake = reply_view(reply.status, reply.content_type, reply.body)
        report.notes.append("this delivery is a handshake: the gateway answers it directly")
        return
    try:
        items = m.split(payload, headers=headers, query=query)
    except GatewayError as exc:
        report.ok = False
        report.items.append({"index": None, "outcome": "error", "error": str(exc)})
        return
    for item in items:
        view = inbound_item(m, item)
        report.ok = report.ok and view["outcome"] in ("routed", "ignored")
        report.items.append(view)
    sync = m.sync_response(payload)
    if sync is not None:
        report.notes.append(
            "the platform gets the mapping's webhook.response: "
            + sync.body.decode(errors="replace")
        )


# --------------------------------------------------------------------------- outbound


def _outbound(report: Report, args: argparse.Namespace) -> None:
    m = report.mapping
    channel = args.channel or _only_channel(m)
    if channel not in m.channels:
        raise InputError(
            f"the mapping has no channel {channel!r}; use --channel with one of: "
            f"{', '.join(m.channels)}"
        )
    source = args.file if args.file not in (None, "-") else "stdin"
    body = _json(_read(args.file, "CXone request body"), source)
    if not isinstance(body, dict):
        raise InputError(f"{source}: the CXone body must be a JSON object")
    answers = _platform_responses(args.platform_response) if args.platform_response else []
    endpoint = args.endpoint
    params = {"channelId": args.channel_id} if endpoint != "legacy" else {}
    if endpoint == "legacy":
        thread = body.get("thread")
        if isinstance(thread, dict) and isinstance(thread.get("idOnExternalPlatform"), str):
            params["postId"] = thread["idOnExternalPlatform"]
    params.update(_pairs(args.params, "--params"))
    if endpoint == "sender_action" and "threadId" not in params:
        report.notes.append(
            "a sender action names its thread in the URL: pass --params threadId=..."
        )
    ctx = OutboundContext(
        kind="sender_action" if endpoint == "sender_action" else "reply",
        endpoint=endpoint,
        channel=channel,
        channel_id=args.channel_id,
        params=params,
        body=body,
    )
    report.notes.append("nothing is sent")
    view = outbound_call(m, ctx, answers)
    report.ok = view["outcome"] == "routed" and (
        view.get("cxone_response") is None or view["cxone_response"]["status"] < 400
    )
    report.items.append(view)


def _only_channel(m: CompiledMapping) -> str:
    if len(m.channels) == 1:
        return next(iter(m.channels))
    raise InputError(
        f"the mapping has several channels; pick one with --channel ({', '.join(m.channels)})"
    )


def _platform_responses(path: Path) -> list[PlatformResponse]:
    data = _json(_read(str(path), "platform response"), str(path))
    out = []
    for spec in data if isinstance(data, list) else [data]:
        if not isinstance(spec, dict) or not isinstance(spec.get("status"), int):
            raise InputError(
                f"{path}: a platform response is an object with an integer "
                "`status` (and optional `headers`, `body`), or a list of them"
            )
        out.append(
            PlatformResponse(spec["status"], dict(spec.get("headers") or {}), spec.get("body"))
        )
    if not out:
        raise InputError(f"{path}: no platform response in the file")
    return out


# --------------------------------------------------------------------------- handshake


def _handshake(report: Report, args: argparse.Namespace) -> None:
    m = report.mapping
    method = (args.method or ("POST" if args.file else "GET")).upper()
    payload = None
    if args.file is not None:
        raw = _read(args.file, "handshake body")
        ctype = args.content_type or _CONTENT_TYPES.get(m.webhook.format, "application/json")
        if "json" in ctype:
            _json(raw, args.file)
        try:
            payload = m.parse_body(raw, ctype)
        except RequestError as exc:
            raise InputError(f"{args.file}: {exc.message}") from None
    headers = {k.lower(): v for k, v in _pairs(args.header, "--header").items()}
    reply = m.handshake(method, _pairs(args.query, "--query"), headers, payload)
    report.notes.append("nothing is sent")
    if reply is None:
        report.ok = False
        report.notes.append(
            f"not a handshake: no `webhook.handshakes` entry matches this "
            f"{method} (a GET would get 405, a POST is routed as a delivery)"
        )
        return
    report.handshake = reply_view(reply.status, reply.content_type, reply.body)
