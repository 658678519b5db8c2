"""The docs hold together: links resolve, every public name is documented, code compiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import entropic
from entropic.cli import parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where links are not links."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_the_pages_exist() -> None:
    names = {page.name for page in DOCS}
    assert {"index.md", "concepts.md", "cli.md", "api.md", "comparison.md", "hashing.md"} <= names
    assert (ROOT / "README.md").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"broken links in {page.name}:\n  " + "\n  ".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A title\n[ok](#a-title) [bad](#nope) [gone](missing.md) [web](https://x.org)\n"
        "```\n[not a link](nowhere.md)\n```\n`[code](nowhere.md)`\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["#a-title", "#nope", "missing.md"]
    assert anchors(page) == {"a-title"}
    assert slug("Hashing: hash_params, `hash_many`") == "hashing-hash_params-hash_many"


def test_every_public_name_is_in_the_api_page() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [name for name in entropic.__all__ if not re.search(rf"\b{re.escape(name)}\b", api)]
    assert not missing, f"docs/api.md does not mention {missing}"


def test_every_command_is_in_the_cli_page() -> None:
    cli = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [name for name in commands if f"## `entropic {name}" not in cli]
    assert not missing, f"docs/cli.md has no section for {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_blocks_compile(page: Path) -> None:
    blocks = PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))
    for number, block in enumerate(blocks, start=1):
        try:
            compile(block, f"{page.name} python block {number}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{page.name}: python block {number} does not compile: {exc}")
