"""The method is documented inside the repository: no tracked file points outside it, and
every "docs/method.md §N" citation names a section that docs/method.md has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

# Spelled in pieces so this file does not match itself.
OUTSIDE = re.compile(re.escape("REFERENCE" + ".md") + "|" + re.escape("../" + "shared/"))
CITATION = re.compile(r"docs/method\.md §(\d+(?:\.\d+)?)")
SECTION_REFERENCE = re.compile(r"§(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def tracked_texts() -> dict[str, str]:
    """Path -> text of every tracked file present in the working tree (binary files skipped)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    texts = {}
    for name in filter(None, listing.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def method_sections() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def test_method_has_its_numbered_sections() -> None:
    sections = method_sections()
    assert {"1", "2", "3", "4", "5", "6"} <= sections, sorted(sections)
    assert {"1.5", "2.1", "3.6"} <= sections, sorted(sections)


def test_no_tracked_file_points_outside_the_repository() -> None:
    texts = tracked_texts()
    assert "docs/method.md" in texts and "README.md" in texts  # the listing worked
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, "files point outside the repository:\n" + "\n".join(offenders)


def test_every_citation_names_an_existing_section() -> None:
    sections = method_sections()
    citations = [
        (name, number, section)
        for name, text in tracked_texts().items()
        for number, line in enumerate(text.splitlines(), start=1)
        for section in CITATION.findall(line)
    ]
    assert len(citations) >= 10, "code comments should cite docs/method.md"
    missing = [f"{name}:{number}: §{section}" for name, number, section in citations if section not in sections]
    assert not missing, "citations of sections docs/method.md does not have:\n" + "\n".join(missing)


def test_method_cross_references_exist() -> None:
    sections = method_sections()
    referenced = set(SECTION_REFERENCE.findall(METHOD.read_text(encoding="utf-8")))
    assert referenced, "docs/method.md refers to none of its sections"
    assert referenced <= sections, sorted(referenced - sections)


@pytest.mark.parametrize(
    ("line", "points_outside"),
    [
        ("see " + "REFERENCE" + ".md §2", True),
        ("[write-up](../" + "shared/seeds/x.txt)", True),
        ("see docs/method.md §2", False),
    ],
)
def test_outside_pattern(line: str, points_outside: bool) -> None:
    assert bool(OUTSIDE.search(line)) is points_outside
