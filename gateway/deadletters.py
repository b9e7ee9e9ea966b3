"""`byoc-gateway dead-letters list|show|replay|drop`: the operator's side of dead letters.

A dead letter is an inbound event the gateway accepted but could not deliver to CXone
for good (CXone refused it, the mapping failed on it, or retries ran out). It keeps the
event, the reason and every attempt. The command opens the store named by gateway.yaml
(`--config`), so it reaches the same sqlite file or Redis the gateway uses, and works
while the gateway runs.

    list [--format table|json] [--limit N]     most recent first
    show ID [--format text|json] [--show-text] reason, attempts, the decoded event
    replay ID | --all                          back to the tail of its thread, retried
    drop ID | --all                            delete for good

Message text, names and every other free-text field of the event are redacted unless
`--show-text` is given; ids, types and timestamps stay visible. Everything printed as
text is stripped of control characters (the event comes from the internet).

Exit codes: 0 done; 1 a problem (unknown id, store unreachable, bad gateway.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway import jsonutil
from gateway.delivery.store import DeadLetter, Store, open_store
from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.delivery.jobs import InboundJob
    from gateway.settings import StoreSettings

__all__ = [
    "add_commands",
    "add_dead_letter_commands",
    "dead_letter_command",
    "redact",
    "run_dead_letter_command",
]

EXIT_OK, EXIT_PROBLEM = 0, 1
_REASON_WIDTH = 72
_SEP = "\x1f"  # thread keys are mapping \x1f channel \x1f thread id

# Keys whose values are identifiers, types or times, never free text: shown as they are.
_KEEP_KEY = re.compile(
    r"""^(?:id|ids|type|kind|event|action|status|direction|method|route|channel|mapping
         |version|attempt|index|count|size|mime_?type|content_?type|format|ts)$
       |^id[A-Z_]                           # idOnExternalPlatform, id_str
       |_ids?$|[a-z0-9]Ids?$                # user_id, message_ids, conversationId
       |_at$|[a-z0-9]At(?:With[A-Za-z]*)?$  # created_at, createdAtWithMilliseconds
       |(?:^|_)(?:time|date|timestamp)(?:$|_)|[a-z0-9](?:Time|Date|Timestamp)
    """,
    re.VERBOSE,
)


def add_dead_letter_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `dead-letters list|show|replay|drop` to the top-level command parser."""
    dl = subparsers.add_parser(
        "dead-letters",
        help="list, inspect, replay or drop messages that could not be delivered",
        description="Dead letters: accepted events the gateway could not deliver to CXone.",
    )
    dl.set_defaults(run=run_dead_letter_command)
    _config_option(dl, Path("gateway.yaml"))
    sub = dl.add_subparsers(dest="dead_letters_command", required=True, metavar="ACTION")

    ls = sub.add_parser("list", help="list dead letters, most recent first")
    _config_option(ls, argparse.SUPPRESS)
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("--limit", type=int, default=100, help="show at most N (default 100)")

    show = sub.add_parser("show", help="show one dead letter: reason, attempts, event")
    _config_option(show, argparse.SUPPRESS)
    show.add_argument("id")
    show.add_argument("--format", choices=["text", "json"], default="text")
    show.add_argument(
        "--show-text", action="store_true", help="show message text and other free text"
    )

    for name, what in (
        ("replay", "put dead letters back in the queue (after fixing the cause)"),
        ("drop", "delete dead letters for good"),
    ):
        p = sub.add_parser(name, help=what)
        _config_option(p, argparse.SUPPRESS)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("id", nargs="?", help="the dead letter's id (see `list`)")
        which.add_argument("--all", action="store_true", help="every dead letter")


add_commands = add_dead_letter_commands  # the name gateway.cli looks for in command modules


def _config_option(parser: argparse.ArgumentParser, default: Any) -> None:
    # on the group and on every action, so `--config` works before or after the action
    parser.add_argument(
        "--config", "-c", type=Path, default=default, help="gateway.yaml (default: ./gateway.yaml)"
    )


def run_dead_letter_command(args: argparse.Namespace) -> int:
    """Open the store of `args.config` and run one action; return the exit code."""
    from gateway.settings_loader import load_settings

    settings = load_settings(args.config)  # ConfigError: cli.py reports it (exit 1)
    return asyncio.run(_run(args, settings.store))


async def _run(args: argparse.Namespace, settings: StoreSettings) -> int:
    err = sys.stderr
    if settings.backend == "memory":
        print(
            "error: the memory store lives inside the gateway process; there is nothing to "
            "open from outside (use sqlite or redis)",
            file=err,
        )
        return EXIT_PROBLEM
    if settings.backend == "sqlite" and not settings.path.exists():
        print(
            f"error: no store at {settings.path} (wrong --config, or no gateway ran here)", file=err
        )
        return EXIT_PROBLEM
    store = open_store(settings)
    try:
        await store.open()
        try:
            return await dead_letter_command(args, store)
        finally:
            await store.close()
    except StoreError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_PROBLEM


async def dead_letter_command(
    args: argparse.Namespace,
    store: Store,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one action against an open store (the testable core of the command)."""
    out = out or sys.stdout
    err = err or sys.stderr
    action = args.dead_letters_command
    if action == "list":
        return await _list(store, args.format, args.limit, out)
    if action == "show":
        return await _show(store, args.id, args.format, args.show_text, out, err)
    if action in ("replay", "drop"):
        return await _change(store, action, None if args.all else args.id, out, err)
    print(f"error: unknown action {action!r}", file=err)
    return EXIT_PROBLEM


# ---------------------------------------------------------------------------- actions


async def _list(store: Store, fmt: str, limit: int, out: TextIO) -> int:
    total = await store.dead_count()
    letters = await store.dead_letters(max(limit, 0))
    if fmt == "json":
        doc = {"total": total, "dead_letters": [_summary(d) for d in letters]}
        out.write(jsonutil.dumps_str(doc) + "\n")
        return EXIT_OK
    if not letters:
        print("no dead letters", file=out)
        return EXIT_OK
    rows = [("ID", "FAILED AT (UTC)", "TRIES", "MAPPING", "CHANNEL", "THREAD", "REASON")]
    for d in letters:
        s = _summary(d)
        rows.append(
            (
                d.id,
                _time(d.failed_at),
                str(s["attempts"]),
                s["mapping"],
                s["channel"],
                s["thread_id"],
                _shorten(d.reason, _REASON_WIDTH),
            )
        )
    print(_table(rows), file=out)
    shown = f"{len(letters)} of {total}" if total > len(letters) else str(total)
    print(f"\n{shown} dead letter{'s' if total != 1 else ''}", file=out)
    return EXIT_OK


async def _show(store: Store, id: str, fmt: str, show_text: bool, out: TextIO, err: TextIO) -> int:
    dead = await store.get_dead(id)
    if dead is None:
        print(f"error: no dead letter {_printable(id)!s}", file=err)
        return EXIT_PROBLEM
    detail = _detail(dead, show_text)
    if fmt == "json":
        out.write(jsonutil.dumps_str(detail) + "\n")
        return EXIT_OK
    lines = [f"dead letter {dead.id}"]
    fields = [
        ("failed at", _time(dead.failed_at)),
        (
            "mapping",
            detail["mapping"]
            + (f" (version {detail['version']})" if detail.get("version") else ""),
        ),
        ("channel", detail["channel"]),
        ("thread", detail["thread_id"]),
        ("route", detail.get("route") or "-"),
        ("message id", detail.get("message_id") or "-"),
        ("received at", _time(detail["received_at"]) if detail.get("received_at") else "-"),
        ("reason", dead.reason),
    ]
    lines += [f"  {name:<12}{_printable(str(value))}" for name, value in fields]
    lines.append(f"attempts ({len(dead.attempts)}):")
    for n, attempt in enumerate(dead.attempts, 1):
        status = attempt.get("status")
        when = attempt.get("at")
        lines.append(
            f"  {n:>2}  {_time(when) if isinstance(when, int | float) else '-':<20}"
            f"  {('HTTP ' + str(status)) if status is not None else '-':<8}"
            f"  {_printable(str(attempt.get('outcome', '')))}"
        )
    note = "" if show_text else " (free text redacted; --show-text shows it)"
    lines.append(f"event{note}:")
    lines.append(_indent(_pretty(detail.get("event"))))
    if detail.get("cxone_request") is not None:
        req = detail["cxone_request"]
        lines.append(f"CXone request as rendered when accepted: {req['method']} {req['path']}")
        lines.append(_indent(_pretty(req["body"])))
    if detail.get("error"):
        lines.append(f"mapping error at intake: {_printable(detail['error'])}")
    if detail.get("undecodable"):
        lines.append("the stored payload could not be decoded")
    print("\n".join(lines), file=out)
    return EXIT_OK


async def _change(store: Store, action: str, id: str | None, out: TextIO, err: TextIO) -> int:
    apply = store.replay_dead if action == "replay" else store.drop_dead
    past = "replayed" if action == "replay" else "dropped"
    if id is not None:
        if not await apply(id):
            print(f"error: no dead letter {_printable(id)}", file=err)
            return EXIT_PROBLEM
        print(f"{past} {id}", file=out)
    else:
        # a snapshot first: replayed letters that fail again must not be replayed again
        letters = await store.dead_letters(await store.dead_count())
        done = 0
        for dead in reversed(letters):  # oldest first: a thread's letters keep their order
            if await apply(dead.id):
                done += 1
        print(f"{past} {done} dead letter{'s' if done != 1 else ''}", file=out)
        if not done:
            return EXIT_OK
    if action == "replay":
        print(
            "the gateway delivers replayed messages in the background, routed again with the "
            "mapping it runs now (reload it first if you fixed a mapping)",
            file=out,
        )
    return EXIT_OK


# ---------------------------------------------------------------------------- views


def _split_thread(thread_key: str) -> tuple[str, str, str]:
    parts = thread_key.split(_SEP, 2)
    if len(parts) != 3:
        return "", "", thread_key
    return parts[0], parts[1], parts[2]


def _decode(dead: DeadLetter) -> InboundJob | None:
    from gateway.delivery.jobs import InboundJob  # the mapping engine: only when needed

    try:
        return InboundJob.decode(dead.payload)
    except Exception:  # any junk in the store is shown as undecodable, never a traceback
        return None


def _summary(dead: DeadLetter) -> dict[str, Any]:
    mapping, channel, thread_id = _split_thread(dead.thread_key)
    return {
        "id": dead.id,
        "failed_at": dead.failed_at,
        "mapping": mapping,
        "channel": channel if channel != "?" else "",
        "thread_id": thread_id if channel != "?" else "",
        "attempts": len(dead.attempts),
        "reason": dead.reason,
    }


def _detail(dead: DeadLetter, show_text: bool) -> dict[str, Any]:
    doc = _summary(dead)
    doc["attempts"] = [dict(a) for a in dead.attempts]
    job = _decode(dead)
    if job is None:
        doc["undecodable"] = True
        return doc
    call = job.call
    doc.update(
        {
            "version": job.version,
            "received_at": job.received_at,
            "route": call.route if call else None,
            "message_id": call.message_id if call else None,
            "error": job.error,
            "event": redact(job.item, show_text),
            "cxone_request": None
            if call is None
            else {
                "action": call.action,
                "method": call.method,
                "path": call.path,
                "body": redact(call.body, show_text),
            },
        }
    )
    if job.parent is not None:
        doc["parent"] = redact(job.parent, show_text)
    return doc


def redact(value: Any, show_text: bool = False, key: str | None = None) -> Any:
    """Replace free text in a decoded event by `<N chars redacted>`; keep ids, types, times."""
    if show_text:
        return value
    if isinstance(value, dict):
        return {k: redact(v, False, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, False, key) for v in value]
    if isinstance(value, str):
        if key is not None and _KEEP_KEY.search(key):
            return value
        return f"<{len(value)} chars redacted>"
    return value  # numbers, booleans, null


def _time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _printable(text: str) -> str:
    """Make untrusted text safe for a terminal: no escapes, no line breaks."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _shorten(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: Sequence[Sequence[str]]) -> str:
    cells = [[_printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _pretty(value: Any) -> str:
    import json

    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    # JSON escapes C0 controls already; C1 controls, bidi overrides and line separators
    # would still act on a terminal, so they become escapes too (valid JSON either way)
    return "".join(ch if ch.isprintable() or ch == "\n" else f"\\u{ord(ch):04x}" for ch in text)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
