"""A data card rendered from a real (small) demo run, its numbers checked against the
Parquet files it describes."""

from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.captions.engines import EngineConfig
from pipeline.captions.plan import DropConfig
from pipeline.captions.stage import CaptionsConfig
from pipeline.captions.stage import run as captions
from pipeline.card import CardConfig, update_card, write_card
from pipeline.curate.stage import CurateConfig
from pipeline.curate.stage import run as curate


@pytest.fixture(scope="module")
def card(demo_catalog, tmp_path_factory):
    demo, _ = demo_catalog
    work = tmp_path_factory.mktemp("card")
    captions(CaptionsConfig(catalog=demo / "catalog.parquet", out=work / "views",
                            engine=EngineConfig(engine="template"), drop=DropConfig(n_views=3),
                            languages=("en", "de")))
    curate(CurateConfig(views=work / "views", catalog=demo / "catalog.parquet",
                        out=work / "curated"))
    path = write_card(CardConfig(dataset="demo", cards_dir=work / "cards",
                                 catalog=demo / "catalog.parquet", views=work / "views",
                                 curated=work / "curated"))
    return path, work


def test_card_header_is_a_hugging_face_dataset_card(card):
    path, _ = card
    text = path.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "cc0-1.0"
    assert front["language"] == ["de", "en"]
    assert front["size_categories"] == ["n<1K"]
    assert "text-retrieval" in front["task_categories"]


def test_card_numbers_match_the_parquet(card):
    path, work = card
    text = path.read_text()
    curated = pq.read_table(work / "curated" / "curated").to_pylist()
    rejected = pq.read_table(work / "curated" / "rejected").to_pylist()
    views = pq.read_table(work / "views").num_rows
    assert views == 32 * 3 * 2  # the demo's 8 test tracks are not captioned
    assert f"{views} views in, {len(curated)} kept, {len(rejected)} rejected" in text
    for rule, count in Counter(r["rule"] for r in rejected).items():
        assert f"| {rule} |" in text and f"| {count} |" in text.split(f"| {rule} |")[1][:80]
    for split, count in Counter(r["split"] for r in curated).items():
        tracks = len({r["track_id"] for r in curated if r["split"] == split})
        assert f"| {split} | {tracks} | {count} |" in text
    assert "- **genre** (" in text and "40 tracks (0 rows rejected)" in text
    assert "Engine: template" in text
    for png in ("views_per_track.png", "caption_words.png", "tag_recall.png"):
        assert (path.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_later_stages_append_their_section(card):
    path, _ = card
    update_card(path.parent, "training", {"runs/demo": {"epochs": 3, "best_valid_loss": 2.5}})
    text = path.read_text()
    assert "## Training" in text and '"best_valid_loss": 2.5' in text and "## Curation" in text
