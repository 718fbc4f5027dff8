"""A catalog format from another package is one module: its reader (under the
entry-point group), its suffix, its bundled tag map and its line in --format's help."""

from tests.plugins import adswap, plugin_env

READER = '''
from pathlib import Path

from schemas.catalog_readers import CatalogReader


def rows(path, config, mapped):
    """track_id | audio | tag, tag, ...: one track a line, the tags uncategorised."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            cells = [c.strip() for c in line.split("|")]
            if len(cells) != 3:
                yield number, {"__error__": f"has {len(cells)} cells; a row is "
                                            "track_id | audio | tags"}
                continue
            yield number, {"track_id": cells[0], "audio": cells[1],
                           "tags": {"pipe": [t for t in cells[2].split(",") if t.strip()]}}


READER = CatalogReader("pipes", "track_id | audio | tags, one track a line", rows,
                       suffixes=(".pipes",), tag_map=Path(__file__).parent / "pipes.yaml")
'''
TAG_MAP = '''
move: {pipe: genre}
genre:
  rock: {raw: [rock music]}
  jazz:
'''


def test_a_catalog_format_from_another_package_needs_only_its_module(tmp_path):
    env = plugin_env(tmp_path / "plugin", "adswap.catalog_readers", "pipes", "pipes_reader",
                     READER, {"pipes.yaml": TAG_MAP})
    catalog = tmp_path / "catalog.pipes"
    catalog.write_text("t1 | a/1.flac | rock music\nt2 | a/2.flac | jazz, rock\nbroken line\n")
    shown = adswap(env, "validate", "--help")
    assert "pipes: track_id | audio | tags, one track a line" in shown.stdout
    checked = adswap(env, "validate", str(catalog))  # recognised by its suffix
    assert checked.returncode == 1, checked.stderr  # the broken line is a rejected row
    assert "catalog.pipes: row 3: has 1 cells" in checked.stdout
    assert "2 valid tracks, 1 problems" in checked.stdout
    report = adswap(env, "tags", str(catalog), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    written = (tmp_path / "report" / "tags.md").read_text()
    assert "format pipes, tag map: " in written and "pipes.yaml" in written
    assert "- **genre** (2): rock (2), jazz (1)" in written  # its bundled map was applied
    assert "`pipe---rock music` -> rock (genre)" in written
    explicit = adswap(env, "validate", str(catalog), "--format", "pipes", "--tag-map", "none",
                      "--categories", "pipe")
    assert "2 valid tracks" in explicit.stdout
