"""docs/ stays true: formula citations name real headings, relative links resolve, and every Python example runs.

- Code cites the specification as `docs/formulas.md#<anchor>`; each cited anchor must be a heading of
  docs/formulas.md (GitHub's slug of it), so a renamed heading cannot leave a citation pointing nowhere.
- Every relative link of README.md and docs/*.md points to an existing file (and, for a Markdown target with a
  `#fragment`, to one of its headings).
- Every ```python block of docs/*.md runs as written (the README's run in tests/test_readme.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FORMULAS = DOCS / "formulas.md"
DOC_PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOC_PAGES]

CITATION = re.compile(r"docs/formulas\.md#([A-Za-z0-9_-]+)")
LEGACY_CITATION = re.compile(r"\bFORMULAS(?:\.md)?\b")  # the formula sheet this doc replaced
SKIP_DIRS = {".git", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


# ---------------------------------------------------------------------------------------------------------
# Markdown helpers
# ---------------------------------------------------------------------------------------------------------

def without_code(text: str) -> str:
    """The Markdown text with fenced code blocks blanked out (their lines kept, empty) and inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, spaces and hyphens kept),
    spaces to hyphens. Links and inline-code markers in the heading count by their text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    """The headings of a Markdown file, outside fenced code, in order."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match:
                lines.append(match.group(1))
    return lines


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for a Markdown file: heading slugs (a repeated slug gets -1, -2, ...) and explicit
    <a id=...> / <a name=...> targets."""
    found, seen = set(), {}
    for heading in headings(path):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of the inline and reference-style links of a Markdown file, outside code."""
    found = []
    for number, line in enumerate(without_code(path.read_text(encoding="utf-8")).splitlines(), start=1):
        found += [(number, target) for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)]
        found += [(number, target) for target in re.findall(r"^\s*\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)", line)]
    return found


def repository_text_files():
    """(path relative to the root, text) of every text file of the source tree (no build output, no binaries)."""
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(directory) / name
            if path.suffix in (".so", ".pyd", ".png", ".pt", ".npz", ".npy", ".pyc") or path.stat().st_size > 2_000_000:
                continue
            try:
                yield path.relative_to(ROOT), path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue


def formula_citations():
    """(file, line number, anchor) of every `docs/formulas.md#<anchor>` in the source tree."""
    for relative, text in repository_text_files():
        for number, line in enumerate(text.splitlines(), start=1):
            for anchor in CITATION.findall(line):
                yield relative, number, anchor


def python_examples():
    """(page name, index, code) of every ```python block of docs/*.md."""
    return [(page.name, index, code) for page in DOC_PAGES
            for index, code in enumerate(PYTHON_BLOCK.findall(page.read_text(encoding="utf-8")))]


# ---------------------------------------------------------------------------------------------------------
# The formula citations
# ---------------------------------------------------------------------------------------------------------

def test_github_slug_matches_github():
    """The slug rule on headings of the kind docs/ uses (checked against GitHub's rendering of such headings)."""
    assert github_slug("Preconditioning") == "preconditioning"
    assert github_slug("DPM-Solver++ (2M)") == "dpm-solver-2m"
    assert github_slug("Philox4x32-10") == "philox4x32-10"
    assert github_slug("Sampling: `fastdiff.sample`") == "sampling-fastdiffsample"
    assert github_slug("CUDA graphs: `fastdiff.GraphedSampler`") == "cuda-graphs-fastdiffgraphedsampler"
    assert github_slug("DDPM, EDM's general sampler, and conditional generation") == \
        "ddpm-edms-general-sampler-and-conditional-generation"


def test_formula_headings_are_unique():
    """Each group of docs/formulas.md has its own heading, so no anchor depends on the order of equal headings."""
    slugs = [github_slug(h) for h in headings(FORMULAS)]
    repeated = sorted({s for s in slugs if slugs.count(s) > 1})
    assert not repeated, f"docs/formulas.md repeats the headings {repeated}"


def test_every_formula_citation_names_a_heading():
    """Every `docs/formulas.md#<anchor>` anywhere in the repository is a heading anchor of docs/formulas.md."""
    known = anchors(FORMULAS)
    citations = list(formula_citations())
    assert len(citations) >= 20, f"expected the code to cite docs/formulas.md, found {len(citations)} citations"
    broken = [f"{path}:{line}: #{anchor}" for path, line, anchor in citations if anchor not in known]
    assert not broken, "citations of headings docs/formulas.md does not have:\n" + "\n".join(broken)


def test_no_citation_of_the_old_formula_sheet():
    """Code and docs cite docs/formulas.md, not the FORMULAS.md sheet it replaced (tests/ are checked below)."""
    stale = [f"{path}:{number}: {line.strip()}" for path, text in repository_text_files() if path.parts[0] != "tests"
             for number, line in enumerate(text.splitlines(), start=1) if LEGACY_CITATION.search(line)]
    assert not stale, "citations of the old FORMULAS.md (cite docs/formulas.md#<anchor>):\n" + "\n".join(stale)


def test_tests_cite_no_old_formula_sheet():
    """The same for tests/ (this file excepted: it names the old sheet to find it)."""
    stale = [f"{path}:{number}" for path, text in repository_text_files()
             if path.parts[0] == "tests" and path.name != Path(__file__).name
             for number, line in enumerate(text.splitlines(), start=1) if LEGACY_CITATION.search(line)]
    assert not stale, "tests citing the old FORMULAS.md:\n" + "\n".join(stale)


# ---------------------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Every relative link of README.md and docs/*.md names an existing file, and a #fragment names a heading."""
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"line {line}: {target} (no file {destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else destination})")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"line {line}: {target} (no heading #{fragment} in {destination.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_links_are_found():
    """Guard: the link test above must see the README's links into docs/."""
    targets = [target for _, target in links(ROOT / "README.md")]
    assert sum(target.startswith("docs/") for target in targets) >= 5


# ---------------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------------

EXAMPLES = python_examples()


def test_docs_have_python_examples():
    """Guard: the parametrized example test below must not silently run zero cases."""
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("page,index,code", EXAMPLES, ids=[f"{page}-{index}" for page, index, _ in EXAMPLES])
def test_python_examples_run(page, index, code, tmp_path, monkeypatch):
    """Each ```python block of docs/*.md runs as written, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/{page} python block {index}", "exec"), {"__name__": "__docs__"})
