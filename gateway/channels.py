"""CXone channels (points of contact), declared once: the mapping plus gateway.yaml.

A mapping's `channels.<role>` holds what the platform can do (private or tree,
attachments, outbound flows, typing); gateway.yaml binds each role to a CXone channel
id in an integration. The channel body CXone gets (`POST /dfo/3.0/channels`, an upsert
by `id`) is built from both:

| field | taken from |
|---|---|
| `id` | the binding's `id` |
| `idOnExternalPlatform` | the binding's `id_on_external_platform`, else the mapping's, else `id` |
| `channelIntegrationId` | the integration's `integration_id` (else its `name`, see below) |
| `name` | the binding's `name`, else the mapping channel's `name` |
| `realExternalPlatformId` | the mapping (default `custom`) |
| `isPrivate`, `hasTreeStructure` | the mapping (default: private, no tree) |
| flags (`hasOutboundFlow`, ...) | the mapping; every flag it leaves out is sent as false |
| `contentFormat` | the mapping, when set |

Every flag is sent explicitly, so an update never leaves an old value behind in CXone.
Without `integration_id` the integration's name is sent: a simulator accepts that, a
real tenant does not (copy the Integration ID from CXone into gateway.yaml).

The `channels` command (`byoc-gateway channels list|create|update|delete`) and the
Action URL pages (`gateway.cxone.pages`) both work through this module.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from gateway import jsonutil
from gateway.errors import ConfigError, GatewayError, Problem, UpstreamRejected
from gateway.settings import ChannelBinding, IntegrationSettings

if TYPE_CHECKING:
    from gateway.cxone.client import CxoneClient
    from gateway.mapping import CompiledMapping
    from gateway.routing import Routing

CHANNEL_FLAGS = (
    "hasAbilityToSendFiles",
    "hasOutboundFlow",
    "hasManualOutboundFlow",
    "canReplyToAnyMessage",
    "canSendSenderActions",
)
EXIT_OK, EXIT_PROBLEMS = 0, 1

State = Literal["in_sync", "differs", "missing", "not_declared"]


@dataclass(frozen=True)
class DeclaredChannel:
    """A channel as gateway.yaml and its mapping declare it, with its CXone body."""

    integration: str
    mapping: str
    role: str
    body: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass(frozen=True)
class ChannelState:
    """A declared channel and what CXone has under its id (or a CXone-only channel)."""

    id: str
    declared: DeclaredChannel | None
    remote: Mapping[str, Any] | None

    @property
    def differences(self) -> tuple[str, ...]:
        """Fields of the declared body CXone holds with another value."""
        if self.declared is None or self.remote is None:
            return ()
        return tuple(k for k, v in self.declared.body.items() if self.remote.get(k) != v)

    @property
    def state(self) -> State:
        if self.declared is None:
            return "not_declared"
        if self.remote is None:
            return "missing"
        return "differs" if self.differences else "in_sync"

    @property
    def name(self) -> str:
        source = self.declared.body if self.declared is not None else self.remote or {}
        return str(source.get("name", self.id))

    def as_dict(self) -> dict[str, Any]:
        d = self.declared
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "integration": d.integration if d else None,
            "mapping": d.mapping if d else None,
            "role": d.role if d else None,
            "differences": list(self.differences),
            "declared": dict(d.body) if d else None,
            "cxone": dict(self.remote) if self.remote is not None else None,
        }


def channel_body(
    integration: IntegrationSettings, binding: ChannelBinding, cxone: Mapping[str, Any]
) -> dict[str, Any]:
    """Build the CXone channel body of one binding from its mapping channel's flags."""
    tree = bool(cxone.get("hasTreeStructure", False))
    body: dict[str, Any] = {
        "id": binding.id,
        "idOnExternalPlatform": binding.id_on_external_platform
        or cxone.get("idOnExternalPlatform")
        or binding.id,
        "channelIntegrationId": integration.integration_id or integration.name,
        "realExternalPlatformId": cxone.get("realExternalPlatformId", "custom"),
        "name": binding.name or cxone.get("name") or binding.id,
        "isPrivate": bool(cxone.get("isPrivate", not tree)),
        "hasTreeStructure": tree,
    }
    for flag in CHANNEL_FLAGS:
        body[flag] = bool(cxone.get(flag, False))
    if "contentFormat" in cxone:
        body["contentFormat"] = cxone["contentFormat"]
    return body


def declare(
    integrations: Iterable[IntegrationSettings],
    mappings: Mapping[str, CompiledMapping],
    integration: str | None = None,
) -> list[DeclaredChannel]:
    """Return every bound channel (of one integration, when named), in gateway.yaml order."""
    out: list[DeclaredChannel] = []
    for integ in integrations:
        if integration is not None and integ.name != integration:
            continue
        for binding in integ.channels:
            mapping = mappings.get(binding.mapping)
            spec = mapping.channels.get(binding.role) if mapping is not None else None
            if spec is None:  # build_routing refuses this; keep the function total anyway
                continue
            body = channel_body(integ, binding, spec.cxone)
            out.append(DeclaredChannel(integ.name, binding.mapping, binding.role, body))
    return out


def declared_channels(routing: Routing, integration: str | None = None) -> list[DeclaredChannel]:
    """Return the channels of the running configuration."""
    return declare(routing.settings.integrations, routing.mappings, integration)


async def channel_states(
    client: CxoneClient, declared: Sequence[DeclaredChannel]
) -> list[ChannelState]:
    """Compare the declared channels with CXone's list.

    CXone channels not declared here are listed too when they belong to one of the
    declared integrations (same `channelIntegrationId`): left-overs to delete.
    """
    remote = {str(c.get("id")): c for c in await client.list_channels()}
    states = [ChannelState(d.id, d, remote.get(d.id)) for d in declared]
    ours = {d.body["channelIntegrationId"] for d in declared}
    known = {d.id for d in declared}
    for cid, channel in remote.items():
        if cid not in known and channel.get("channelIntegrationId") in ours:
            states.append(ChannelState(cid, None, channel))
    return states


async def upsert(client: CxoneClient, channel: DeclaredChannel) -> None:
    """Create or update one channel in CXone with its declared body."""
    await client.upsert_channel(channel.body)


async def delete(client: CxoneClient, channel_id: str) -> bool:
    """Delete a channel in CXone; False when CXone does not have it (404)."""
    try:
        await client.delete_channel(channel_id)
    except UpstreamRejected as exc:
        if exc.status == 404:
            return False
        raise
    return True


# --- command line ----------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `channels list|create|update|delete` to the top-level command parser."""
    channels = subparsers.add_parser(
        "channels", help="list, create, update or delete the CXone channels gateway.yaml declares"
    )
    channels.set_defaults(run=run_channels_command)
    sub = channels.add_subparsers(dest="channels_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", type=Path, default=Path("gateway.yaml"))
        p.add_argument("--integration", metavar="NAME", help="only this integration's channels")

    ls = sub.add_parser("list", help="declared channels and their state in CXone")
    common(ls)
    ls.add_argument("--format", choices=["text", "json"], default="text")
    for action, text in (
        ("create", "create declared channels CXone does not have (default: all missing)"),
        ("update", "send the declared settings of channels CXone has (default: all differing)"),
    ):
        p = sub.add_parser(action, help=text)
        common(p)
        p.add_argument("ids", nargs="*", metavar="ID", help="CXone channel ids")
        p.add_argument("--dry-run", action="store_true", help="print the bodies, change nothing")
    rm = sub.add_parser("delete", help="delete channels in CXone (ids, or --all declared ones)")
    common(rm)
    rm.add_argument("ids", nargs="*", metavar="ID", help="CXone channel ids")
    rm.add_argument("--all", action="store_true", help="every declared channel CXone has")
    rm.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")


def run_channels_command(args: argparse.Namespace) -> int:
    """Load gateway.yaml and the mappings, then run the action against CXone."""
    from gateway.routing import load_routing
    from gateway.settings_loader import load_settings

    try:
        settings = load_settings(args.config)
        routing = load_routing(settings, 1, reread_settings=False)
        if args.integration and not any(i.name == args.integration for i in settings.integrations):
            raise ConfigError(
                Problem(str(args.config), "/integrations", f"no integration {args.integration!r}")
            )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    return asyncio.run(channels_command(args, routing, sys.stdout, sys.stderr))


async def channels_command(
    args: argparse.Namespace, routing: Routing, out: TextIO, err: TextIO
) -> int:
    """Run one `channels` action with a CXone client of its own."""
    from gateway.cxone.auth import CxoneAuth
    from gateway.cxone.client import CxoneClient
    from gateway.http import make_session
    from gateway.http_pool import HttpPool
    from gateway.tls import client_context

    settings = routing.settings
    declared = declared_channels(routing, args.integration)
    tls = client_context(settings.cxone.tls)
    session = make_session(settings.cxone.timeouts, ssl_context=tls)
    auth = CxoneAuth(session, settings.cxone)
    http = HttpPool()
    try:
        client = CxoneClient(http, settings.cxone, auth, ssl_context=tls)
        return await _act(args, client, declared, out, err)
    except GatewayError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_PROBLEMS
    finally:
        await auth.aclose()
        await http.close()
        await session.close()


async def _act(
    args: argparse.Namespace,
    client: CxoneClient,
    declared: list[DeclaredChannel],
    out: TextIO,
    err: TextIO,
) -> int:
    action: str = args.channels_command
    states = await channel_states(client, declared)
    if action == "list":
        _print_list(states, args.format, out)
        return EXIT_OK
    by_id = {s.id: s for s in states}
    wanted: list[str] = list(dict.fromkeys(args.ids))
    problems = 0
    if action == "delete":
        if args.all:
            wanted += [s.id for s in states if s.declared and s.remote and s.id not in wanted]
        if not wanted:
            print("error: name the channel ids to delete, or --all", file=err)
            return EXIT_PROBLEMS
        for cid in wanted:
            if args.dry_run:
                print(f"would delete {cid}", file=out)
            elif await delete(client, cid):
                print(f"deleted {cid}", file=out)
            else:
                print(f"error: {cid}: CXone has no such channel", file=err)
                problems += 1
        return EXIT_PROBLEMS if problems else EXIT_OK
    if not wanted:
        default: State = "missing" if action == "create" else "differs"
        wanted = [s.id for s in states if s.state == default]
    for cid in wanted:
        state = by_id.get(cid)
        if state is None or state.declared is None:
            print(f"error: {cid}: not declared in gateway.yaml (declare it once, there)", file=err)
            problems += 1
            continue
        if action == "create" and state.remote is not None:
            print(f"{cid}: already exists ({state.state.replace('_', ' ')})", file=out)
            continue
        if action == "update" and state.remote is None:
            print(f"error: {cid}: CXone has no such channel (run create)", file=err)
            problems += 1
            continue
        if args.dry_run:
            body = jsonutil.dumps_str(dict(state.declared.body))
            print(f"would {action} {cid}: {body}", file=out)
            continue
        await upsert(client, state.declared)
        print(f"{action}d {cid}", file=out)
    if not wanted:
        print(f"nothing to {action}", file=out)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _print_list(states: Sequence[ChannelState], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        print(jsonutil.dumps_str({"channels": [s.as_dict() for s in states]}), file=out)
        return
    rows = [("ID", "NAME", "INTEGRATION", "MAPPING/ROLE", "CXONE")]
    for s in states:
        d = s.declared
        state = s.state.replace("_", " ")
        if s.differences:
            state += ": " + ", ".join(s.differences)
        where = f"{d.mapping}/{d.role}" if d else "-"
        rows.append((s.id, s.name, d.integration if d else "-", where, state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
