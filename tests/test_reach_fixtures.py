"""Issue 3: the fixture platforms are complete mappings: they load, pass their inline tests
(which cover every route), keep their secrets out of sight, and each has its reach test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.mapping import CompiledMapping, load_mapping, run_inline_tests
from gateway.mapping.check import check_paths
from tests.reach_world import PLATFORMS

FIXTURES = sorted(PLATFORMS.glob("*.yaml"))
TESTS = Path(__file__).resolve().parent


def _routes_named_by_tests(mapping: CompiledMapping) -> set[str]:
    routes: set[str] = set()
    for test in mapping.tests:
        expect = test.get("expect")
        if isinstance(expect, list):
            routes.update(e["route"] for e in expect if "route" in e)
        elif isinstance(expect, dict) and "route" in expect:
            routes.add(expect["route"])
    return routes


def test_there_are_the_fixture_platforms_the_docs_name() -> None:
    # the cookbook's table on docs/mappings.md lists every fixture platform, and no other
    docs = (TESTS.parent / "docs" / "mappings.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([a-z0-9-]+)\.yaml` \|", docs, flags=re.MULTILINE))
    assert {p.stem for p in FIXTURES} == named
    assert {"gecko", "heron", "magpie", "parrot", "termite", "toucan"} <= named
    assert {"hornbill", "ibis", "kestrel", "weaver"} <= named


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_a_fixture_loads_and_its_inline_tests_cover_every_route(path: Path) -> None:
    mapping = load_mapping(path, check_secrets=False)
    assert mapping.name == path.stem
    assert [str(f) for f in run_inline_tests(mapping)] == []
    covered = _routes_named_by_tests(mapping)
    assert set(mapping.inbound_routes) - covered == set()
    assert set(mapping.outbound_routes) - covered == set()
    assert (TESTS / f"test_reach_{path.stem}.py").is_file()


def test_check_accepts_the_whole_folder_without_secrets() -> None:
    report = check_paths([PLATFORMS], check_secrets=False)
    assert report.ok, [str(p) for f in report.files for p in f.problems]
    assert len(report.files) == len(FIXTURES)
