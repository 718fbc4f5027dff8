"""The documentation stays true: the CLI reference is what the code generates now, the
site builds strictly (no broken link or anchor, no page left out of the nav), and the
README's links lead to pages that exist."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.docs import ROOT, pages


def test_the_cli_reference_is_what_the_configs_and_the_makefile_say_now():
    from tools.cli_reference import PAGE, render

    expected = render()
    assert PAGE.read_text(encoding="utf-8") == expected, (
        f"{PAGE.relative_to(ROOT)} is stale: run `make cli-reference` and commit it")
    # every command and every setting of it is there, with its default (other tests
    # register throwaway commands in COMMANDS: the app's own are the ones to find)
    from adswap.cli import app
    from adswap.config_cli import COMMANDS
    from schemas.config import leaves

    for command in app.registered_commands:
        assert f"### adswap {command.name}\n" in expected
        cls = COMMANDS.get(command.name)
        assert cls is None or all(f"| `{leaf.path}` |" in expected for leaf in leaves(cls))
    assert "| `rules.length.min_words` | `--min-words` | `4` |" in expected
    assert "| `make docs` |" in expected
    # the extension tables, as the code has them
    assert "| `template` | rule-based, no model | en, de, fr, es, it | no | no | 0 | none |" \
        in expected
    assert "| `hf-frozen` |" in expected and "| `mtg-jamendo` |" in expected
    assert "`min_words` (4)" in expected


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (make setup installs the docs extra)")
def test_the_site_builds_strictly(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ,
                                                      "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "extending" / "index.html").exists()
    assert (tmp_path / "reference" / "cli" / "index.html").exists()


def test_every_relative_link_of_the_readme_leads_to_a_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert len(links) > 20
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    assert len(readme.splitlines()) < 200  # the README stays short; the rest is docs/


def test_no_page_names_a_setting_that_is_gone():
    """A `--set KEY=` on a page names a setting or section that exists (the extending
    page's keys belong to its example plugins)."""
    from adswap.config_cli import COMMANDS
    from schemas.config import leaves

    known = {leaf.path for cls in COMMANDS.values() for leaf in leaves(cls)}
    sections = {p.rsplit(".", i)[0] for p in known for i in range(1, p.count(".") + 1)}
    stale = []
    for page in pages():
        if page.name == "extending.md":
            continue
        for key in re.findall(r"`--set ([a-z_.]+)=", page.read_text(encoding="utf-8")):
            if key not in known | sections | {"section.key"}:  # the placeholder
                stale.append(f"{page.relative_to(ROOT)}: --set {key}")
    assert not stale, stale
