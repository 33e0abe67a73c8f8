"""The fenced code blocks of the documentation pages and the README, and the example files they show."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = REPO / "docs" / "pages"
EXAMPLES = REPO / "docs" / "examples"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
# pymdownx.snippets: a path from the repository root, optionally ":section".
INCLUDE = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')


@dataclass(frozen=True)
class Block:
    source: Path
    line: int  # of the opening fence, from 1
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.source.relative_to(REPO)}:{self.line}"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted(PAGES.rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, its body dedented by the fence's own indentation."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            line = lines[end]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.relative_to(REPO)}:{index + 1}: a code block is never closed")
        found.append(Block(path, index + 1, opening["lang"].lower(), "\n".join(body)))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks_of(path)]


def include_of(block: Block) -> tuple[Path, str | None] | None:
    """The file (and section) a block includes, when the block is one include line."""
    match = INCLUDE.match(block.body.strip())
    if match is None:
        return None
    return REPO / match["path"], match["section"]


def section_of(path: Path, section: str | None) -> str:
    """The text a snippet include shows: the whole file, or the lines between its section markers."""
    text = path.read_text()
    if section is None:
        return text
    start, end = f"# --8<-- [start:{section}]", f"# --8<-- [end:{section}]"
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == start)
    finish = next(i for i, line in enumerate(lines) if line.strip() == end)
    return "\n".join(lines[begin + 1 : finish]) + "\n"


def example_kind(path: Path) -> str:
    """``pytest``, ``script`` or ``dag``: how the harness runs an example file."""
    if path.name.startswith("test_"):
        return "pytest"
    if 'if __name__ == "__main__":' in path.read_text():
        return "script"
    return "dag"


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name != "__init__.py") if EXAMPLES.is_dir() else []
