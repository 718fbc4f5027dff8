"""Retrieval metrics against hand-checked ranks and a brute-force reference; subsets;
multi-clip and multi-caption tracks; the importer's faults; `adswap eval` end to end."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from adswap.cli import app
from trainer.evaluate import music_to_text_ranks, subset_metrics
from trainer.metrics import pool_tracks, ranks, recall_summary


def test_ranks_on_a_hand_checked_example():
    items = torch.eye(3)
    queries = torch.tensor([[1.0, 0.0, 0.0],    # item 0 is best: rank 1
                            [0.9, 0.1, 0.0],    # target item 1 scores 0.1 < 0.9: rank 2
                            [0.5, 0.5, 0.2]])   # target item 2 is last: rank 3
    assert ranks(queries, items, torch.tensor([0, 1, 2])).tolist() == [1, 2, 3]
    tie = torch.tensor([[0.5, 0.5, 0.0]])
    assert ranks(tie, items, torch.tensor([1])).tolist() == [2]  # ties count against
    summary = recall_summary(torch.tensor([1, 2, 3, 12]))
    assert summary["R@1"] == 25.0 and summary["R@5"] == 75.0 and summary["R@10"] == 75.0
    assert summary["MR"] == 2.5


def test_ranks_match_a_brute_force_reference_and_chunking():
    g = torch.Generator().manual_seed(0)
    items = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    queries = F.normalize(torch.randn(70, 8, generator=g), dim=1)
    targets = torch.randint(0, 50, (70,), generator=g)
    expected = [1 + sum(float(queries[q] @ items[i]) > float(queries[q] @ items[targets[q]])
                        for i in range(50) if i != targets[q]) for q in range(70)]
    assert ranks(queries, items, targets, chunk=7).tolist() == expected
    owner = torch.randint(0, 50, (70,), generator=g)
    m2t = music_to_text_ranks(items, queries, owner, chunk=9)
    for i in range(50):
        own = [q for q in range(70) if owner[q] == i]
        if not own:
            continue
        best = max(float(items[i] @ queries[q]) for q in own)
        others = sum(float(items[i] @ queries[q]) >= best for q in range(70) if owner[q] != i)
        assert m2t[i] == 1 + others


def test_subsets_are_seeded_and_cover_multi_caption_tracks():
    g = torch.Generator().manual_seed(1)
    tracks = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    caption_track = torch.arange(40).repeat_interleave(2)  # two captions per track
    text = F.normalize(tracks[caption_track] + 0.8 * torch.randn(80, 8, generator=g), dim=1)
    a = subset_metrics(tracks, text, caption_track, subsets=5, size=10, seed=3)
    assert a == subset_metrics(tracks, text, caption_track, subsets=5, size=10, seed=3)
    b = subset_metrics(tracks, text, caption_track, subsets=5, size=10, seed=4)
    assert a["t2m_R@1"] != b["t2m_R@1"]
    assert a["subsets"] == 5 and a["subset_tracks"] == 10 and a["queries"] == 80
    assert a["t2m_R@10"]["mean"] == 100.0  # 10 items: every target is in the top 10
    whole = subset_metrics(tracks, text, caption_track, subsets=5, size=500, seed=3)
    assert whole["subsets"] == 1 and whole["t2m_R@1"]["std"] == 0.0
    # one subset of everything: the mean is the plain metric over all 80 queries
    expected = recall_summary(ranks(text, tracks, caption_track))
    assert whole["t2m_R@1"]["mean"] == pytest.approx(expected["R@1"])
    assert whole["t2m_MR"]["mean"] == pytest.approx(expected["MR"])


def test_multi_clip_tracks_pool_to_one_item():
    clips = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    clip_track = torch.tensor([0, 0, 1])
    mean = pool_tracks(clips, clip_track, 2, "mean")
    assert torch.allclose(mean[0], torch.tensor([0.7071, 0.7071]), atol=1e-4)
    assert torch.equal(pool_tracks(clips, clip_track, 2, "first"), clips[[0, 2]])


@pytest.fixture(scope="module")
def tiny_run(demo_shards, tmp_path_factory):
    from trainer.config import load_config
    from trainer.train import train

    out = tmp_path_factory.mktemp("eval_run")
    train(load_config(None, [
        f"data.shards={demo_shards}", f"run.out={out}", "data.batch_size=8", "data.workers=1",
        "model.audio.clip_seconds=1.5", "model.audio.cnn.channels=[4,8]", "model.dim=32",
        "model.layers=1", "optim.epochs=2", "optim.warmup_epochs=1"]))
    return out


def test_import_reports_bad_rows_and_audio_but_keeps_going(demo_catalog, tmp_path):
    demo, catalog = demo_catalog
    good = catalog.tracks[:3]
    (tmp_path / "broken.flac").write_bytes(b"not audio")
    sf.write(tmp_path / "short.wav", np.zeros(800, np.float32) + 0.1, 16_000)
    rows = [
        {"audio": str(demo / good[0].audio), "caption": "a rock song", "language": "en"},
        {"audio": str(demo / good[0].audio), "caption": "ein Rocksong", "language": "de"},
        {"audio": str(demo / good[1].audio), "caption": "calm piano", "track_id": "t1"},
        {"audio": str(demo / good[2].audio), "caption": ""},
        {"audio": str(tmp_path / "missing.flac"), "caption": "gone"},
        {"audio": str(tmp_path / "broken.flac"), "caption": "broken"},
        {"audio": str(tmp_path / "short.wav"), "caption": "too short"},
        {"track_id": "no/slash", "audio": str(demo / good[2].audio), "caption": "x"},
        {"caption": "no audio at all"},
    ]
    source = tmp_path / "set.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    result = CliRunner().invoke(app, ["import-eval", "--file", str(source), "--out",
                                      str(tmp_path / "set"), "--audio-root", "/",
                                      "--clip-seconds", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 tracks, 3 captions" in result.output
    rejects = [json.loads(line) for line in (tmp_path / "set" / "rejects.jsonl").read_text()
               .splitlines()]
    reasons = " | ".join(r["reason"] for r in rejects)
    for fragment in ("no caption", "audio file is missing", "unreadable audio",
                     "shorter than one", "may only hold", "needs an `audio` path",
                     "not valid JSON"):
        assert fragment in reasons
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["languages"] == {"de": 1, "en": 2}
    captions = pq.read_table(tmp_path / "set" / "captions.parquet").to_pylist()
    assert sorted(c["text"] for c in captions) == ["a rock song", "calm piano", "ein Rocksong"]


def test_eval_end_to_end_with_cache_and_card(tiny_run, demo_catalog, tmp_path):
    demo, _ = demo_catalog
    result = CliRunner().invoke(app, [
        "import-eval", "--file", str(demo / "reference_captions.parquet"), "--catalog",
        str(demo / "catalog.parquet"), "--out", str(tmp_path / "demo-test"), "--clip-seconds",
        "1.5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    args = ["eval", str(tiny_run), "--eval-set", str(tmp_path / "demo-test"), "--subset-size", "3",
            "--subsets", "4", "--card-dir", str(tmp_path / "card")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "eval demo-test (en): text->music R@10" in first.output
    report = json.loads((tiny_run / "eval" / "report.json").read_text())
    entry = report["sets"]["demo-test"]
    test_tracks = len(set(pq.read_table(demo / "reference_captions.parquet")
                          .column("track_id").to_pylist()))
    assert entry["tracks"] == test_tracks and entry["captions"] == 2 * test_tracks
    m = entry["languages"]["en"]
    assert m["subsets"] == 4 and m["subset_tracks"] == 3
    assert 0 <= m["t2m_R@1"]["mean"] <= 100 and 1 <= m["t2m_MR"]["mean"] <= 3
    cache = tiny_run / "eval" / "demo-test" / "embeddings.pt"
    stamp = cache.stat().st_mtime_ns
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and cache.stat().st_mtime_ns == stamp  # reused
    assert json.loads((tiny_run / "eval" / "report.json").read_text())["sets"] == \
        report["sets"]
    for name in ("report.md", "recall_at_k.png", "r10_by_set.png"):
        assert (tiny_run / "eval" / name).exists()
    assert "| en | text→music |" in (tiny_run / "eval" / "report.md").read_text()
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert str(tiny_run) in card["evaluation"]
    missing = CliRunner().invoke(app, ["eval", str(tmp_path), "--eval-set", str(tmp_path)])
    assert missing.exit_code == 1 and "no checkpoint" in missing.output
    # a run trained in bf16 is scored under the same autocast, its frozen encoder cast
    bf16 = tmp_path / "bf16-run"
    shutil.copytree(tiny_run, bf16)
    config = yaml.safe_load((bf16 / "config.yaml").read_text())
    config["optim"]["precision"] = "bf16"
    (bf16 / "config.yaml").write_text(yaml.safe_dump(config))
    assert CliRunner().invoke(app, ["eval", str(bf16), *args[2:6]]).exit_code == 0
    fp32, cached = (torch.load(run / "eval" / "demo-test" / "embeddings.pt",
                               weights_only=True) for run in (tiny_run, bf16))
    assert not fp32["key"]["bf16"] and cached["key"]["bf16"]
    assert not torch.equal(cached["data"]["clips"], fp32["data"]["clips"])
    assert F.cosine_similarity(cached["data"]["text"], fp32["data"]["text"]).min() > 0.97


def test_an_eval_set_of_another_schema_version_says_to_import_it_again(tmp_path):
    from pipeline.shards.tar import write_tar
    from tests.trainer.test_data import fake_sample
    from trainer.evaluate import embed_set

    sample = fake_sample(schema="sample/0")
    write_tar(tmp_path / "test-000000.tar",
              [(sample["__key__"], {"flac": sample["flac"], "json": sample["json"]})])
    (tmp_path / "sizes.json").write_text(json.dumps({"test-000000.tar": 1}))
    with pytest.raises(ValueError, match=r"test-000000.tar:t-0.json: written as 'sample/0'"
                       r".*import it again with this version: `adswap import-eval`"):
        embed_set(None, tmp_path, 16_000, 2.0, 4, "cpu")  # fails before any embedding


def test_each_set_evaluated_stays_in_the_report(tiny_run, demo_catalog, tmp_path):
    import shutil

    import pyarrow as pa

    demo, _ = demo_catalog
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    refs = pq.read_table(demo / "reference_captions.parquet").to_pylist()
    ids = sorted({r["track_id"] for r in refs})
    for name, part in (("set-a", ids[:3]), ("set-b", ids[3:6])):
        pq.write_table(pa.Table.from_pylist([r for r in refs if r["track_id"] in part]),
                       tmp_path / f"{name}.parquet")
        result = CliRunner().invoke(app, [
            "import-eval", "--file", str(tmp_path / f"{name}.parquet"), "--catalog",
            str(demo / "catalog.parquet"), "--out", str(tmp_path / name), "--clip-seconds",
            "1.5", "--workers", "1"])
        assert result.exit_code == 0, result.output

    def evaluate(name, subsets):
        result = CliRunner().invoke(app, ["eval", str(run), "--eval-set", str(tmp_path / name),
                                          "--subset-size", "2", "--subsets", str(subsets),
                                          "--checkpoint", "last"])
        assert result.exit_code == 0, result.output
        return json.loads((run / "eval" / "report.json").read_text()), \
            (run / "eval" / "report.md").read_text()

    first, _ = evaluate("set-a", 3)
    report, markdown = evaluate("set-b", 2)
    assert list(report["sets"]) == ["set-a", "set-b"]
    assert report["sets"]["set-a"]["languages"] == first["sets"]["set-a"]["languages"]
    assert "## set-a" in markdown and "## set-b" in markdown
    a, b = markdown.split("## set-b")
    assert "Measured earlier: checkpoint `last.pt`" in a and "3 subsets of 2" in a
    assert "Measured earlier" not in b
    report, markdown = evaluate("set-a", 2)  # set-a again, as set-b was measured
    assert list(report["sets"]) == ["set-a", "set-b"] and "Measured earlier" not in markdown
    assert report["sets"]["set-a"]["protocol"]["subsets"] == 2
