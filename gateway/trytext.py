"""The terminal report of `byoc-gateway try` (`gateway.trycmd`; --format json needs none).

The routes tried and what each `when` gave, the fields extracted, and the exact requests
that would be sent (credentials are masked when the report is made).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.mapping.inbound import NO_ROUTE

if TYPE_CHECKING:
    from gateway.trycmd import Report


def _pretty(value: Any, indent: str) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return "\n".join(indent + line for line in text.splitlines())


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_text(report: Report) -> str:
    """The report for a terminal."""
    m = report.mapping
    lines = [f"mapping  {m.name} ({m.source}, version {m.version})"]
    if report.secrets == "partial":
        lines.append(
            "secrets  from the environment (masked below), except these, which are not set "
            "and stand for themselves (${NAME}, or a .invalid URL):"
        )
        lines.extend(f"           {text}" for text in report.missing)
    elif report.secrets == "placeholders":
        lines.append(
            "secrets  none looked up (like `check --no-secrets`): ${NAME} stands for itself, "
            "${NAME:-x} gives x, because:"
        )
        lines.extend(f"           {text}" for text in report.missing)
    else:
        lines.append("secrets  from the environment (credentials are masked below)")
    lines.extend(f"note     {n}" for n in report.notes)
    if report.handshake is not None:
        h = report.handshake
        lines.append(f"handshake reply: HTTP {h['status']} {h['content_type']}")
        lines.append(f"  {h['body']}")
    for item in report.items:
        lines.append("")
        lines.extend(
            _outbound_text(item) if report.direction == "outbound" else _inbound_text(item, m.name)
        )
    lines.append("")
    lines.append("result   " + ("ok" if report.ok else "FAILED (exit 1)"))
    return "\n".join(lines)


def _tried_text(tried: list[dict[str, Any]], full: bool) -> list[str]:
    """Every `when` tried (full), or only the one that matched and the names it passed."""
    if not tried:
        return []
    last = tried[-1]
    if not full and last.get("matched"):
        passed = [t["route"] for t in tried[:-1]]
        after = f" (after {', '.join(passed)} did not match)" if passed else ""
        if last["when"] is None:
            return [f"  matched: it has no `when`, so it takes everything{after}"]
        return [f"  matched: when {last['when']} -> {_short(last['value'])}{after}"]
    width = max(len(t["route"]) for t in tried)
    out = ["  when, in route order:"]
    for t in tried:
        name = t["route"].ljust(width)
        if t["when"] is None:
            out.append(f"    {name}  (no `when`: takes everything)")
        elif "error" in t:
            out.append(f"    {name}  FAILED  when {t['when']}: {t['error']}")
        else:
            result = "MATCH" if t["matched"] else "no   "
            out.append(f"    {name}  {result}  when {t['when']} -> {_short(t['value'])}")
    return out


def _inbound_text(item: dict[str, Any], mapping: str) -> list[str]:
    head = f"item {item['index']}" if item["index"] is not None else "delivery"
    outcome = item["outcome"]
    if outcome == "routed":
        lines = [
            f"{head}: route {item['route']} -> CXone {item['action']} (channel {item['channel']})"
        ]
    elif outcome == "ignored":
        lines = [f"{head}: ignored by route {item['route']} (acknowledged and counted, not sent)"]
    elif outcome == "no_route":
        lines = [
            f"{head}: no route: no `when` matched (acknowledged and counted as "
            f"{NO_ROUTE!r}, not sent)"
        ]
    else:
        lines = [f"{head}: error: {item['error']}"]
        if item["index"] is not None:
            lines.append(
                "  (the gateway keeps such an event: it becomes a dead letter, "
                "replayable once the mapping is fixed)"
            )
    lines.extend(_tried_text(item.get("tried") or [], full=outcome in ("no_route", "error")))
    if item.get("dedupe_key"):
        lines.append(f"  dedupe key: {item['dedupe_key']}")
    if item.get("note"):
        lines.append(f"  note: {item['note']}")
    if outcome == "routed":
        request = item["cxone_request"]
        lines.append(f"  fields: {_short(item['fields'], 400)}")
        lines.append(f"  CXone request: {request['method']} {request['path']}")
        where = []
        if "{channel_id}" in request["path"]:
            where.append(
                f"{{channel_id}} is the CXone channel bound to {mapping}/"
                f"{item['channel']} in gateway.yaml"
            )
        if "{contact_id}" in request["path"]:
            where.append(f"{{contact_id}} is the CXone contact of thread {item['thread_id']}")
        lines.append(
            "    (relative to the CXone DFO API base" + "".join(f"; {w}" for w in where) + ")"
        )
        lines.append(_pretty(request["body"], "    "))
    return lines


def _outbound_text(item: dict[str, Any]) -> list[str]:
    lines = [
        f"CXone {item['kind']} on the {item['endpoint']} endpoint, channel "
        f"{item['channel']} ({item['channel_id']}), params {_short(item['params'])}"
    ]
    if item["outcome"] == "routed":
        lines.append(f"route {item['route']}")
    elif item["outcome"] == "no_route":
        lines.append(f"no route: {item['error']}")
    else:
        lines.append(f"rejected: {item['error']}")
    lines.extend(_tried_text(item.get("tried") or [], full=item["outcome"] != "routed"))
    if item["outcome"] == "routed":
        lines.append(f"  fields: {_short(item['fields'], 400)}")
        requests = item["platform_requests"]
        for n, request in enumerate(requests, 1):
            lines.append(f"platform request {n} of {len(requests)}:")
            lines.append(f"  {request['method']} {request['url']}")
            lines.extend(f"  {k}: {v}" for k, v in request["headers"].items())
            if request["body"] is not None:
                lines.append(_pretty(request["body"], "  "))
    answer = item.get("cxone_response")
    if answer is not None:
        lines.append(
            f"CXone gets: HTTP {answer['status']}"
            + (" (after the gateway's retries)" if answer.get("retried") else "")
        )
        if answer["body"] is not None:
            lines.append(_pretty(answer["body"], "  "))
    elif item["outcome"] == "routed" and item["kind"] == "reply":
        lines.append("CXone's response: pass --platform-response F to see it")
    return lines
