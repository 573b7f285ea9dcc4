"""The README fits a screen, every relative link in the docs resolves, every key of ours is
documented, and results/README.md is what benchmarks/results_index.py writes now."""

import glob
import importlib.util
import os
import re

import yaml
from conftest import REPO

MAX_README_LINES = 160
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _doc_files():
    return [os.path.join(REPO, "README.md"), os.path.join(REPO, "results", "README.md")] + sorted(
        glob.glob(os.path.join(REPO, "docs", "*.md"))
    )


def _anchors(path):
    """The anchors GitHub gives a Markdown file's headings (code blocks left out)."""
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", _read(path))):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_readme_fits_a_screen():
    lines = _read(os.path.join(REPO, "README.md")).splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_every_relative_link_resolves():
    broken = []
    for doc in _doc_files():
        for target in LINK.findall(FENCE.sub("", _read(doc))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            where = f"{os.path.relpath(doc, REPO)}: {target}"
            if not os.path.exists(resolved):
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_key_of_overall_yaml_is_documented():
    keys = yaml.safe_load(_read(os.path.join(REPO, "properties", "overall.yaml")))
    usage = _read(os.path.join(REPO, "docs", "usage.md"))
    missing = [key for key in keys if f"`{key}`" not in usage]
    assert not missing, f"keys of properties/overall.yaml not in docs/usage.md: {missing}"


def test_results_index_is_current():
    path = os.path.join(REPO, "benchmarks", "results_index.py")
    spec = importlib.util.spec_from_file_location("results_index", path)
    results_index = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_index)
    expected = results_index.render_index(results_index.suite_summaries())
    assert (
        _read(results_index.INDEX) == expected
    ), "results/README.md is out of date: run python benchmarks/results_index.py"
