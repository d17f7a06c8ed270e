"""The repository's documentation is self-contained: every relative link resolves, and nothing
points outside the repository (a clone has only what is in it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", *ROOT.glob("*.md"), *(ROOT / "docs").glob("**/*.md")],
)
DOCUMENTS = sorted(set(DOCUMENTS))
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")
# Where no file may send the reader: the design documents that live beside the repository.
OUTSIDE = ".." + "/shared"
SKIPPED_DIRS = {".git", ".venv", "node_modules", ".data", ".mypy_cache", ".ruff_cache"}
SKIPPED_DIRS |= {".pytest_cache", "__pycache__", ".hypothesis", "htmlcov"}


def _text_without_code(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, number = base, 1
        while name in found:
            name, number = f"{base}-{number}", number + 1
        found.add(name)
    return found


def _links(path: Path) -> list[str]:
    text = _text_without_code(path)
    return [*LINK.findall(text), *IMAGE.findall(text)]


def test_the_documents_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert {"README.md", "docs/README.md", "docs/api.md", "CHANGELOG.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    broken: list[str] = []
    for link in _links(document):
        if link.startswith(EXTERNAL):
            continue
        target, _, anchor = link.partition("#")
        resolved = (document.parent / target).resolve() if target else document
        if not resolved.exists():
            broken.append(f"{link}: no such file")
        elif not resolved.is_relative_to(ROOT):
            broken.append(f"{link}: outside the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{link}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


def test_slug_follows_github() -> None:
    assert slug("Auth and sessions") == "auth-and-sessions"
    assert slug("`saas create-admin`") == "saas-create-admin"
    assert slug("The OpenAPI document and generated clients") == (
        "the-openapi-document-and-generated-clients"
    )
    assert slug("Python versions: 3.11 to 3.14") == "python-versions-311-to-314"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) `[code](nowhere.md)`\n")
    assert _links(page) == ["#title", "missing.md"]
    assert anchors(page) == {"title"}


def _repository_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and not parts & SKIPPED_DIRS and path.stat().st_size < 2_000_000:
            files.append(path)
    return files


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if OUTSIDE in text:
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
