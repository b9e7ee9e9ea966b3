"""docs/mappings.md cannot drift from the code: every YAML block on it is checked.

How (see tests/docsnippets.py): a `snippet:` block must equal a region of a fixture
platform (which the suite loads, tests inline and drives through the real gateway), an
`example:` block is loaded and its inline tests run, and any other block is loaded as a
fragment of a mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import MappingError
from gateway.mapping import load_mapping, run_inline_tests
from gateway.mapping.values import deep_merge
from tests.docsnippets import DOC, FRAGMENT_BASE, ROOT, Block, blocks, regions, snippet

PLATFORMS = ROOT / "tests" / "fixtures" / "platforms"
YAML_BLOCKS = [b for b in blocks(DOC.read_text(encoding="utf-8")) if b.language == "yaml"]


def _ids(found: list[Block]) -> list[str]:
    return [f"line{b.line}" + (f"-{b.ref}" if b.ref else "") for b in found]


def _of(kind: str) -> list[Block]:
    return [b for b in YAML_BLOCKS if b.kind == kind]


def test_the_page_has_every_kind_of_block() -> None:
    assert len(_of("snippet")) >= 30
    assert len(_of("example")) >= 1
    assert len(_of("")) >= 6
    assert {b.kind for b in YAML_BLOCKS} <= {"snippet", "example", ""}


@pytest.mark.parametrize("block", _of("snippet"), ids=_ids(_of("snippet")))
def test_a_snippet_is_its_fixture_region(block: Block) -> None:
    assert block.text == snippet(block.ref), (
        f"docs/mappings.md:{block.line} differs from {block.ref}; "
        "run `python -m tests.docsnippets --write`"
    )


def test_every_fixture_region_is_quoted_on_the_page() -> None:
    quoted = {b.ref for b in _of("snippet")}
    defined = {
        f"tests/fixtures/platforms/{path.name}#{name}"
        for path in sorted(PLATFORMS.glob("*.yaml"))
        for name in regions(path)
    }
    assert defined - quoted == set()


@pytest.mark.parametrize("block", _of("example"), ids=_ids(_of("example")))
def test_a_complete_example_loads_and_passes_its_tests(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(block.text, encoding="utf-8")
    mapping = load_mapping(path, check_secrets=False)
    assert mapping.tests, "a complete example shows its tests too"
    assert [str(f) for f in run_inline_tests(mapping)] == []


@pytest.mark.parametrize("block", _of(""), ids=_ids(_of("")))
def test_a_fragment_is_valid_mapping_text(block: Block, tmp_path: Path) -> None:
    fragment = yaml.safe_load(block.text)
    assert isinstance(fragment, dict), f"docs/mappings.md:{block.line}: not a mapping fragment"
    base: dict[str, Any] = yaml.safe_load(FRAGMENT_BASE)
    merged = deep_merge(base, fragment)
    if "signature" in (fragment.get("webhook") or {}):  # a scheme's keys replace, never mix
        merged["webhook"]["signature"] = fragment["webhook"]["signature"]
    path = tmp_path / "fragment.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    try:
        load_mapping(path, check_secrets=False)
    except MappingError as exc:
        pytest.fail(f"docs/mappings.md:{block.line}: {exc}")


def test_a_broken_fragment_is_caught(tmp_path: Path) -> None:
    # the check above would notice a typo in the docs
    (bad,) = blocks("```yaml\nwebhook:\n  foreach: 'events[?'\n```\n")
    with pytest.raises(pytest.fail.Exception, match="JMESPath"):
        test_a_fragment_is_valid_mapping_text(bad, tmp_path)


def test_the_snippet_tool_reports_and_refreshes_a_stale_block() -> None:
    from tests.docsnippets import refreshed

    ref = "tests/fixtures/platforms/magpie.yaml#signature"
    stale = f"text\n<!-- snippet: {ref} -->\n```yaml\nold: text\n```\nmore\n"
    fresh = refreshed(stale)
    assert fresh == f"text\n<!-- snippet: {ref} -->\n```yaml\n{snippet(ref)}```\nmore\n"
    assert refreshed(fresh) == fresh


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_within_the_page_leads_to_a_heading() -> None:
    text = DOC.read_text(encoding="utf-8")
    outside = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", outside, flags=re.MULTILINE)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the page links to its sections"
    assert links - headings == set()
