"""Issue 3: twenty hot reloads under a steady stream of inbound and outbound traffic.

The mapping in a temporary directory carries a version in `vars`; every valid change
bumps it, and the version marks what each request produced: the text of the DM CXone
receives, and both the body of the platform request and the URL in CXone's response
for an agent reply. Reloads alternate a valid change with a broken file (ten kinds),
while DMs and replies flow. Then: no request failed, each was served by exactly one
version in force during its life, each valid reload is in force at once, and after each
broken one the old version still serves and /status.json names the file and place.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.clock import FakeClock
from gateway.sandbox.wiring import REPO_MAPPINGS
from tests.harness import CHAT_CHANNEL, SECRETS, World, start_world

BASE = (REPO_MAPPINGS / "watering-hole.yaml").read_text(encoding="utf-8")
EXTRA = Path(__file__).parent / "fixtures" / "mappings" / "minimal.yaml"
USERS = ("usr_zebra", "usr_lion", "usr_giraffe", "usr_hippo")
PROBE = "usr_meerkat"  # asks, right after each reload, which version serves

DM_ROUTE = """  - name: direct-message
    when: type == 'message.created'
    channel: chat
    action: create_message
"""
DM_BODY = """    body:
      messageContent: {payload: {text: "{{ text }} [{{ vars.version }}]"}}
"""
REPLY_BODY = """        attachments: "{{ attachments if attachments is defined and attachments else omit }}"
"""
REV = """        rev: "{{ vars.version }}"
"""
REPLY_RESPONSE = """    response:
      outbound: {message: {url: "{{ url }}?rev={{ vars.version }}"}}

  - name: comment-reply
"""
TESTS = """tests:
  - name: the version marks the reply
    outbound:
      kind: reply
      channel: chat
      body:
        thread: {{idOnExternalPlatform: cnv_1}}
        messageContent: {{type: TEXT, payload: {{text: hi}}}}
      platform_response:
        status: 201
        body: {{message: {{id: msg_1, created_at_ms: 1764158400000, permalink: "https://wh.example/c/cnv_1#msg_1"}}}}
    expect:
      route: chat-reply
      match: subset
      requests:
        - {{body: {{text: hi, rev: {version}}}}}
      response:
        message: {{url: "https://wh.example/c/cnv_1#msg_1?rev={version}"}}
  - name: the version marks the message
    inbound:
      body:
        events:
          - {{id: evt_1, type: message.created, data: {{conversation: {{id: cnv_1}}, message: {{id: msg_1, text: hi, sent_at_ms: 1764158400000}}, sender: {{id: usr_zebra}}}}}}
    expect:
      - route: direct-message
        match: subset
        body: {{messageContent: {{payload: {{text: "hi [{version}]"}}}}}}
"""


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def versioned(version: str, *, tests_expect: str | None = None) -> str:
    """The Watering Hole mapping whose version marks what it renders."""
    text = BASE[: BASE.index("\n# Inline tests")] + "\n"
    text = replace_once(
        text,
        "  account_user_id: ${WATERING_HOLE_ACCOUNT_USER_ID:-usr_jungle}\n",
        "  account_user_id: ${WATERING_HOLE_ACCOUNT_USER_ID:-usr_jungle}\n"
        f"  version: {version}\n",
    )
    text = replace_once(text, DM_ROUTE, DM_ROUTE + DM_BODY)
    text = replace_once(text, REPLY_BODY, REPLY_BODY + REV)
    text = replace_once(text, "\n  - name: comment-reply\n", "\n" + REPLY_RESPONSE)
    return text + TESTS.format(version=tests_expect or version)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@dataclass
class Broken:
    """One way to break the configuration, and where the error must point."""

    name: str
    file: str  # the file name the error names
    where: str  # the JSON pointer it names
    line: int | None
    apply: Callable[[], object]


@dataclass
class Traffic:
    """The steady stream: DMs in, replies out; every outcome recorded."""

    world: World
    conversations: dict[str, str]
    clock: FakeClock
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    inbound: list[tuple[str, int, int, int]] = field(default_factory=list)  # text, lo, hi, served
    outbound: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # in the order they came into force

    def version(self) -> int:
        """The index of the version in force right now."""
        routing = self.world.gateway.routing
        return self.versions.index(routing.mappings["watering-hole"].vars["version"])

    def served(self, marker: str) -> int:
        return self.versions.index(marker) if marker in self.versions else -1

    async def _note(self) -> None:
        async with self.progress:
            self.progress.notify_all()

    async def dms(self, user: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            text = f"dm {user} {n}"
            lo = self.version()
            try:
                _, msg = await self.world.dm(user, text)
                got = await delivered(self.world, msg)
            except Exception as exc:  # every failure is a finding
                self.failures.append(f"{text}: {type(exc).__name__}: {exc}")
                return
            hi = self.version()
            shown = got.body["messageContent"]["payload"]["text"]
            match = re.fullmatch(re.escape(text) + r" \[(v\d+)\]", shown)
            self.inbound.append((text, lo, hi, self.served(match.group(1)) if match else -1))
            await self._note()

    async def replies(self, user: str) -> None:
        conv = self.conversations[user]
        n = 0
        while not self.stop.is_set():
            n += 1
            text = f"reply {user} {n}"
            self.clock.now += 0.05  # the platform allows 20 requests a second (on its clock)
            lo = self.version()
            status, body = await self.world.cxone.agent_reply(CHAT_CHANNEL, conv, text)
            hi = self.version()
            if status != 200:
                self.failures.append(f"{text}: HTTP {status} {body}")
                return
            (call,) = [c for c in self.world.wh.api_calls if c.json and c.json.get("text") == text]
            url_rev = body["message"]["url"].rpartition("?rev=")[2]
            self.outbound.append(
                (text, lo, hi, self.served(call.json["rev"]), self.served(url_rev))
            )
            await self._note()

    async def wait_progress(self, since: tuple[int, int]) -> tuple[int, int]:
        """Wait until both streams completed requests since `since` (no sleeping)."""
        async with self.progress:
            await self.progress.wait_for(
                lambda: (
                    bool(self.failures)
                    or (len(self.inbound) >= since[0] + 2 and len(self.outbound) >= since[1] + 2)
                )
            )
        return len(self.inbound), len(self.outbound)


def sent(world: World, text: str) -> Any:
    """The platform API call that carried `text` (newest first: the lists grow long)."""
    return next(c for c in reversed(world.wh.api_calls) if c.json and c.json.get("text") == text)


async def delivered(world: World, message_id: str) -> Any:
    """Wait until CXone has the message (newest first)."""

    def find() -> Any:
        return next((m for m in reversed(world.cxone.messages) if m.message_id == message_id), None)

    return await world.cxone.wait_for(find, timeout=10)


async def probe(world: World, conv: str, tag: str) -> tuple[str, str, str]:
    """One DM and one reply now; return the versions that served them."""
    _, msg = await world.dm(PROBE, f"probe {tag}")
    got = await delivered(world, msg)
    dm = got.body["messageContent"]["payload"]["text"].rpartition(" [")[2].rstrip("]")
    status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, f"probe reply {tag}")
    assert status == 200, body
    (call,) = [
        c for c in world.wh.api_calls if c.json and c.json.get("text") == f"probe reply {tag}"
    ]
    return dm, call.json["rev"], body["message"]["url"].rpartition("?rev=")[2]


async def status(world: World) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {SECRETS.admin_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(world.running.urls["cxone"] + "/status.json", headers=headers) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def reload_counts(world: World) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(world.running.urls["cxone"] + "/metrics") as resp,
    ):
        text = await resp.text()
    found = re.findall(r'^byoc_reloads_total\{outcome="(\w+)"\} ([0-9.]+)$', text, re.M)
    return {outcome: float(value) for outcome, value in found}


async def test_twenty_reloads_under_traffic_fail_nothing_and_mix_nothing(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    main = mappings / "watering-hole.yaml"
    main.write_text(versioned("v0"), encoding="utf-8")
    clock = FakeClock(1_764_158_400.0)
    async with (
        asyncio.timeout(20),
        start_world(tmp_path / "gw", clock=clock, mappings_dir=mappings) as world,
    ):
        gateway_yaml = world.settings.source
        assert gateway_yaml is not None
        good_settings = gateway_yaml.read_text(encoding="utf-8")
        conversations = {}
        for user in (*USERS, PROBE):
            conv, msg = await world.dm(user, "hello")
            await world.delivered(CHAT_CHANNEL, msg)
            conversations[user] = conv
        traffic = Traffic(world, conversations, clock, versions=["v0"])
        current = {"text": versioned("v0")}

        def write(text: str) -> Callable[[], object]:
            return lambda: main.write_text(text, encoding="utf-8")

        def broken_kinds() -> list[Broken]:
            # fmt: off
            ok = current["text"]
            dm_when = "    when: type == 'message.created'\n"
            yaml_bad = replace_once(ok, dm_when, dm_when.replace("'\n", "': [\n"))
            unknown = replace_once(ok, "    limits: {max_text_chars: 1000, on_too_long: split}",
                                   "    limitz: {max_text_chars: 1000, on_too_long: split}")
            jmes = replace_once(ok, dm_when, "    when: type == = 'x'\n")
            jinja = replace_once(ok, REV, '        rev: "{{ vars.version }"\n')
            secret = replace_once(ok, "${WATERING_HOLE_TOKEN}", "${BYOC_STRESS_SURELY_UNSET}")
            sandbox = replace_once(ok, REV, "        rev: \"{{ ''.__class__.__mro__ }}\"\n")
            failing = ok[: ok.index("tests:\n")] + TESTS.format(version="v999")
            settings_bad = good_settings.replace("mappings_dir:", "mapping_dir:")
            dm_line = line_of(ok, "    when: type == 'message.created'")
            rev_line = line_of(ok, "        rev:")
            return [
                Broken("yaml", main.name, "", dm_line, write(yaml_bad)),
                Broken("unknown key", main.name, "/outbound/2/limitz",
                       line_of(unknown, "limitz"), write(unknown)),
                Broken("jmespath", main.name, "/inbound/1/when", dm_line, write(jmes)),
                Broken("jinja", main.name, "/outbound/2/request/body/rev", rev_line, write(jinja)),
                Broken("missing secret", main.name, "/platform/auth/bearer",
                       line_of(ok, "bearer:"), write(secret)),
                Broken("sandbox", main.name, "/outbound/2/request/body/rev", rev_line,
                       write(sandbox)),
                Broken("failing inline test", main.name, "/tests/0", line_of(failing, "tests:") + 1,
                       write(failing)),
                Broken("mapping removed", gateway_yaml.name,
                       "/integrations/0/channels/0/mapping", None, main.unlink),
                Broken("duplicate name", "zz-copy.yaml", "/name", line_of(ok, "name: watering-hole"),
                       lambda: (mappings / "zz-copy.yaml").write_text(ok, encoding="utf-8")),
                Broken("bad gateway.yaml", gateway_yaml.name, "/mapping_dir",
                       line_of(settings_bad, "mapping_dir:"),
                       lambda: gateway_yaml.write_text(settings_bad, encoding="utf-8")),
            ]
            # fmt: on

        tasks = [asyncio.create_task(traffic.dms(u)) for u in USERS[:2]]
        tasks += [asyncio.create_task(traffic.replies(u)) for u in USERS[2:]]
        seen = (0, 0)
        try:
            for n in range(1, 11):
                # ---- a valid change: a new version, and files come and go
                seen = await traffic.wait_progress(seen)
                version = f"v{n}"
                current["text"] = versioned(version)
                main.write_text(current["text"], encoding="utf-8")
                gateway_yaml.write_text(good_settings, encoding="utf-8")
                (mappings / "zz-copy.yaml").unlink(missing_ok=True)
                if n == 3:
                    shutil.copy(EXTRA, mappings / "extra.yaml")
                if n == 6:
                    (mappings / "extra.yaml").unlink()
                traffic.versions.append(version)  # before the swap: requests may see it at once
                result = await world.gateway.reload()
                assert result.ok, result.errors
                assert traffic.version() == len(traffic.versions) - 1
                clock.now += 0.05
                assert await probe(world, conversations[PROBE], f"{n}") == (version,) * 3
                page = (await status(world))["last_reload"]
                assert page["ok"] is True and page["generation"] == n + 1
                assert str(main) in page["changes"]["changed"]
                assert page["versions"]["watering-hole"] == (
                    world.gateway.routing.mappings["watering-hole"].version
                )
                if n == 3:
                    assert page["changes"]["added"] == [str(mappings / "extra.yaml")]
                    assert set(page["versions"]) == {"watering-hole", "minimal"}
                if n == 6:
                    assert page["changes"]["removed"] == [str(mappings / "extra.yaml")]
                    assert set(page["versions"]) == {"watering-hole"}
                # ---- a broken file: the running version stays, the status names the place
                seen = await traffic.wait_progress(seen)
                broken = broken_kinds()[n - 1]
                broken.apply()
                result = await world.gateway.reload()
                assert not result.ok, broken.name
                assert traffic.version() == len(traffic.versions) - 1, broken.name
                clock.now += 0.05
                assert await probe(world, conversations[PROBE], f"{n}b") == (version,) * 3
                page = (await status(world))["last_reload"]
                assert page["ok"] is False and page["errors"], broken.name
                assert page["generation"] == n + 2
                assert any(
                    Path(p["file"]).name == broken.file
                    and p["where"] == broken.where
                    and (broken.line is None or p["line"] == broken.line)
                    for p in page["problems"]
                ), (broken.name, page["problems"])
                assert (await status(world))["routing"]["generation"] == n + 1
        finally:
            traffic.stop.set()
            await asyncio.gather(*tasks)

        # the last broken file is still there; the version in force is the last valid one
        assert traffic.versions[-1] == "v10" and traffic.version() == 10
        assert not traffic.failures, traffic.failures
        assert len(traffic.inbound) >= 20 and len(traffic.outbound) >= 20
        # requests were in flight across the swaps (started on one version, ended on the next)
        assert any(lo < hi for _, lo, hi, _ in traffic.inbound)
        assert any(lo < hi for _, lo, hi, *_ in traffic.outbound)
        for text, lo, hi, served in traffic.inbound:
            assert lo <= served <= hi, (text, lo, hi, served)
        for text, lo, hi, in_request, in_response in traffic.outbound:
            assert in_request == in_response, text  # one version served the whole reply
            assert lo <= in_request <= hi, (text, lo, hi, in_request)
        assert all(d.ok for d in world.wh.deliveries)
        assert not [c for c in world.wh.api_calls if c.status is None or c.status >= 400]
        assert not world.cxone.violations
        assert await world.gateway.store.dead_count() == 0
        assert await reload_counts(world) == {"ok": 10.0, "error": 10.0}
