"""Keep the YAML examples of docs/mappings.md true: read them, check them, refresh them.

Every ```yaml block of docs/mappings.md is one of three kinds, told by the HTML comment
on the line before it (invisible when the page is rendered):

- `<!-- snippet: tests/fixtures/platforms/parrot.yaml#webhook -->`: the block is the
  region `webhook` of that file, i.e. the lines between `# --8<-- [start:webhook]` and
  `# --8<-- [end:webhook]`, without marker lines of other regions, dedented. The file
  is a mapping the suite loads, runs the inline tests of and drives through the real
  gateway, so a quoted example is always one that works.
- `<!-- example: complete -->`: the block is a whole mapping; it is loaded and its
  inline tests are run.
- no marker: a fragment. It is merged (objects key by key) into a small valid mapping
  (FRAGMENT_BASE) and loaded: schema, ${...} syntax, JMESPath and Jinja compile.

`python -m tests.docsnippets --write` rewrites the snippet blocks from the fixtures after
a fixture changed; without `--write` it lists the blocks that differ.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mappings.md"

_MARKER = re.compile(r"^\s*# --8<-- \[(start|end):([A-Za-z0-9_-]+)\]\s*$")
_KIND = re.compile(r"^<!-- (snippet|example): (\S+) -->$")
_FENCE = re.compile(r"^```(\w*)\s*$")

# A valid mapping that fragments are merged into: every channel role the docs use exists.
FRAGMENT_BASE = """\
name: doc-fragment
platform: {base_url: "https://api.example.com/v1"}
channels:
  chat: {name: Chat}
  board: {name: Board}
  dm: {name: DMs}
  inbox: {name: Inbox}
  sms: {name: SMS}
  forum: {name: Forum}
webhook:
  path: /webhooks/doc-fragment
  signature: {scheme: none, allow_unsigned: true}
"""


@dataclass(frozen=True)
class Block:
    """One fenced block of the doc."""

    line: int  # 1-based line of the opening fence
    language: str
    kind: str  # "snippet", "example" or "" (fragment)
    ref: str  # the marker's argument
    text: str  # the content, ending with a newline
    start: int  # index of the first content line
    end: int  # index of the closing fence


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the marker before it."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i].strip()) if lines[i].lstrip().startswith("```") else None
        if fence is None:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        marker = _KIND.match(lines[i - 1].strip()) if i else None
        body = "\n".join(line[indent:] for line in lines[i + 1 : j])
        found.append(
            Block(
                line=i + 1,
                language=fence.group(1),
                kind=marker.group(1) if marker else "",
                ref=marker.group(2) if marker else "",
                text=body + "\n" if body else "",
                start=i + 1,
                end=j,
            )
        )
        i = j + 1
    return found


def regions(path: Path) -> dict[str, str]:
    """The named regions of a file: marker lines dropped, common indentation removed."""
    open_at: dict[str, list[str]] = {}
    done: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = _MARKER.match(line)
        if marker is not None:
            edge, name = marker.groups()
            if edge == "start":
                if name in open_at or name in done:
                    raise ValueError(f"{path}: region {name!r} starts twice")
                open_at[name] = []
            else:
                if name not in open_at:
                    raise ValueError(f"{path}: region {name!r} ends without a start")
                done[name] = textwrap.dedent("\n".join(open_at.pop(name))) + "\n"
            continue
        for collected in open_at.values():
            collected.append(line)
    if open_at:
        raise ValueError(f"{path}: region(s) {', '.join(open_at)} never end")
    return done


def snippet(ref: str) -> str:
    """The text a `snippet:` marker refers to (FILE#REGION, FILE relative to the repo)."""
    file, _, name = ref.partition("#")
    found = regions(ROOT / file)
    if name not in found:
        raise KeyError(f"{file} has no region {name!r} (regions: {', '.join(sorted(found))})")
    return found[name]


def refreshed(text: str) -> str:
    """The doc with every snippet block replaced by its region's current text."""
    lines = text.splitlines()
    for block in reversed(blocks(text)):
        if block.kind == "snippet":
            indent = lines[block.start - 1][
                : len(lines[block.start - 1]) - len(lines[block.start - 1].lstrip())
            ]
            new = [indent + line if line else line for line in snippet(block.ref).splitlines()]
            lines[block.start : block.end] = new
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    fresh = refreshed(text)
    if fresh == text:
        print("docs/mappings.md: every snippet matches its fixture")
        return 0
    if "--write" in argv:
        DOC.write_text(fresh, encoding="utf-8")
        print("docs/mappings.md: snippets refreshed")
        return 0
    stale = [b for b in blocks(text) if b.kind == "snippet" and b.text != snippet(b.ref)]
    for b in stale:
        print(f"docs/mappings.md:{b.line}: {b.ref} differs (run with --write)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
