"""The README is one page that starts with the two commands and links only to files that exist; the documentation
site (mkdocs.yml, docs/) has every page in its navigation and builds with warnings as errors; `make test` builds
it (what CI runs)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _nav_files(nav) -> list[str]:
    files: list[str] = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            files.extend(_nav_files(value) if isinstance(value, list) else [value])
    return files


def _mkdocs_config() -> dict:
    # mkdocs.yml may hold python tags (!!python/name) in other projects; plain safe_load is enough here
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_readme_is_a_page_that_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 100, "the README is one page: the rest belongs in docs/"
    first_block = FENCE.search(text).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    # nothing but the title before them
    assert text[: text.index("```")].strip() == "# datagames_env"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no '{target}' target"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_relative_links_exist():
    links = [link for link in LINK.findall(README.read_text()) if not re.match(r"^[a-z]+:", link)]
    assert links, "the README links to the documentation pages"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    # the README points at every page of the site's navigation (it is the table of contents on GitHub)
    linked = {str((ROOT / link.split("#")[0]).resolve().relative_to(ROOT / "docs")) for link in links
              if link.startswith("docs/")}
    nav = set(_nav_files(_mkdocs_config()["nav"])) - {"index.md"}
    assert nav <= linked, f"pages of the site that the README does not link: {sorted(nav - linked)}"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = _mkdocs_config()
    assert config["docs_dir"] == "docs" and config.get("strict") is True
    nav = _nav_files(config["nav"])
    assert len(nav) == len(set(nav))
    assert [p for p in nav if not (ROOT / "docs" / p).is_file()] == []
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= set(nav), f"docs pages missing from the nav: {sorted(pages - set(nav))}"
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]]
    assert "mkdocstrings" in plugins and "::: datagames_env" in (ROOT / "docs" / "api.md").read_text()


def test_make_test_builds_the_docs_with_warnings_as_errors():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert re.search(r"mkdocs build --strict", recipe), recipe
    install = re.search(r"pip install -q -e \"\.\[([a-z,]+)\]\"", makefile).group(1).split(",")
    assert set(install) >= {"dev", "rl", "benchmarl", "docs"}
    assert re.search(r"^docs:.*\n\t.*mkdocs build --strict", makefile, re.M)
    assert "site/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra is not installed (make install installs it)")
def test_docs_build_strict(tmp_path):
    """The whole site, API reference included, with warnings (broken links, missing anchors) as errors."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index.html", "getting-started.html", "results.html", "api.html", "benchmarl.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api.html").read_text()
    # the docstrings rendered: a function of the top level and the policy module's spec table
    assert "parallel_env" in api and "<table>" in api
