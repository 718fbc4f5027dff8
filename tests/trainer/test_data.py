"""The loader: view sampling (p_cap, uniform View Dropout), languages, crops, spans."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from schemas.sample import Sample, SampleView
from schemas.views import Span
from trainer.config import AudioConfig, DataConfig
from trainer.data import MakePairs, SharedEpoch, _loader, eval_loader, train_loader


def fake_sample(n_views=4, languages=("en",), frames=48_000, track_id="t", **changes):
    """A sample as `adswap shards` writes it; `changes` overwrite fields of its json."""
    import io

    import soundfile as sf

    views = [SampleView(i, lang, f"caption {i} {lang}", [Span("genre", "rock", 0, 4)])
             for i in range(n_views) for lang in languages]
    buffer = io.BytesIO()
    sf.write(buffer, np.linspace(-0.5, 0.5, frames, dtype=np.float32), 16_000, format="FLAC")
    meta = Sample(track_id, 0, 0.0, frames / 16_000, 16_000, "train",
                  {"genre": ["rock"], "mood": ["happy"]}, "rock, happy", views).to_json()
    return {"__key__": f"{track_id}-0", "flac": buffer.getvalue(),
            "json": json.dumps({**meta, **changes}).encode()}


def pairs(p_cap, n=2000, languages=(), train=True, **sample):
    stage = MakePairs(DataConfig(p_cap=p_cap, languages=languages), AudioConfig(clip_seconds=2),
                      seed=0, epoch=SharedEpoch(), train=train)
    return list(stage(iter([fake_sample(**sample)] * n)))


def test_p_cap_zero_gives_tags_only_and_one_gives_captions_only():
    tags_only = pairs(0.0, 200)
    assert {p["text"] for p in tags_only} == {"rock, happy"}
    assert set(tags_only[0]) == {"audio", "text", "spans", "tags", "track_id", "shard"}
    assert tags_only[0]["spans"] == [
        {"category": "genre", "term": "rock", "start": 0, "end": 4},
        {"category": "mood", "term": "happy", "start": 6, "end": 11}]
    captions = pairs(1.0, 200)
    assert all(p["text"].startswith("caption") for p in captions)
    half = sum(p["text"].startswith("caption") for p in pairs(0.5, 2000))
    assert 900 < half < 1100


def test_views_are_drawn_uniformly():
    counts = Counter(p["text"] for p in pairs(1.0, 4000, n_views=8))
    assert len(counts) == 8
    chi2 = sum((n - 500) ** 2 / 500 for n in counts.values())
    assert chi2 < 18.48  # the 1% critical value of chi-square with 7 degrees of freedom


def test_without_view_dropout_one_view_is_always_used():
    stage = MakePairs(DataConfig(p_cap=1.0, view_dropout=False), AudioConfig(clip_seconds=2),
                      0, SharedEpoch(), train=True)
    assert {p["text"] for p in stage(iter([fake_sample(n_views=5)] * 50))} == {"caption 4 en"}


def test_languages_restrict_the_views_and_fall_back_to_tags():
    stage = MakePairs(DataConfig(p_cap=1.0, languages=("de",)), AudioConfig(clip_seconds=2),
                      0, SharedEpoch(), train=True)
    chosen = list(stage(iter([fake_sample(languages=("en", "de"))] * 300)))
    assert {p["text"].split()[-1] for p in chosen} == {"de"}
    english_only = list(stage(iter([fake_sample(languages=("en",))] * 5)))
    assert {p["text"] for p in english_only} == {"rock, happy"}


def test_crops_and_pads_to_the_model_input():
    train = pairs(1.0, 50, frames=48_000)
    assert all(p["audio"].shape == (32_000,) for p in train)
    starts = {round(float(p["audio"][0]), 4) for p in train}
    assert len(starts) > 10  # random crops
    valid = pairs(1.0, 3, train=False, frames=48_000)
    assert len({round(float(p["audio"][0]), 6) for p in valid}) == 1  # the centre, always
    assert valid[0]["text"] == "caption 0 en"
    short = pairs(1.0, 1, frames=16_000)[0]["audio"]
    assert short.shape == (32_000,) and torch.all(short[16_000:] == 0)


def test_train_loader_reads_shards_with_workers_and_replays_an_epoch(demo_shards):
    data = DataConfig(shards=demo_shards, batch_size=4, workers=2, shuffle_buffer=8,
                      shuffle_initial=4)
    audio = AudioConfig(clip_seconds=1.5)
    epoch = SharedEpoch(0)
    loader = train_loader(data, audio, seed=3, epoch=epoch)

    def first(n):
        batches = iter(loader)
        return [next(batches) for _ in range(n)]

    a, b = first(6), first(6)
    assert [x["track_id"] for x in a] == [x["track_id"] for x in b]
    assert all(torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b, strict=True))
    assert a[0]["audio"].shape == (4, 24_000) and len(a[0]["text"]) == 4
    epoch.set(1)
    c = first(6)
    assert [x["track_id"] for x in a] != [x["track_id"] for x in c]


def test_eval_loader_reads_each_valid_sample_once(demo_shards):
    sizes = json.loads((demo_shards / "sizes.json").read_text())
    expected = sum(n for name, n in sizes.items() if name.startswith("valid-"))
    loader = eval_loader(demo_shards, "valid", DataConfig(), AudioConfig(clip_seconds=2), 3)
    keys = [t for batch in loader for t in batch["track_id"]]
    assert len(keys) == expected > 0


def test_eval_loader_parts_share_out_the_shards(demo_shards):
    """Distributed validation: part (rank, world) reads every world-th shard; the parts
    cover the split once, and a process beyond the number of shards reads nothing."""
    whole = [(t, s) for batch in eval_loader(demo_shards, "valid", DataConfig(),
                                             AudioConfig(clip_seconds=2), 3)
             for t, s in zip(batch["track_id"], batch["shard"], strict=True)]
    shards = sorted({s for _, s in whole})
    world = len(shards) + 1
    parts = [[(t, s) for batch in eval_loader(demo_shards, "valid", DataConfig(),
                                              AudioConfig(clip_seconds=2), 3, (rank, world))
              for t, s in zip(batch["track_id"], batch["shard"], strict=True)]
             for rank in range(world)]
    assert len(shards) >= 2 and parts[-1] == []
    assert sorted(row for part in parts for row in part) == sorted(whole)
    assert [r for r in whole if r[1] == shards[1]] == parts[1]


def test_wrong_sample_rate_is_reported():
    stage = MakePairs(DataConfig(), AudioConfig(sample_rate=48_000), 0, SharedEpoch(), True)
    with pytest.raises(ValueError, match="make shards at the model's rate"):
        list(stage(iter([fake_sample()])))


def old_shards(folder, schema="sample/0"):
    """A shard set written by another schema version of the sample json."""
    from pipeline.shards.tar import write_tar

    folder.mkdir()
    samples = []
    for i in range(4):
        sample = fake_sample(track_id=f"t{i}", schema=schema)
        samples.append((sample["__key__"], {"flac": sample["flac"], "json": sample["json"]}))
    write_tar(folder / "train-000000.tar", samples)
    (folder / "sizes.json").write_text(json.dumps({"train-000000.tar": 4}))
    return folder


def test_a_sample_of_another_schema_version_says_to_rebuild_the_shards(tmp_path):
    stage = MakePairs(DataConfig(), AudioConfig(clip_seconds=2), 0, SharedEpoch(), True)
    with pytest.raises(ValueError, match="'sample/0'.*adswap shards --overwrite"):
        list(stage(iter([fake_sample(schema="sample/0")])))
    with pytest.raises(ValueError, match="views: has type str"):
        list(stage(iter([fake_sample(views="rock")])))
    # through the loader's worker processes, naming the shard and the sample
    data = DataConfig(shards=old_shards(tmp_path / "old"), batch_size=2, workers=1)
    with pytest.raises(ValueError, match=r"train-000000.tar:t\d-0.json: written as "
                       "'sample/0'.*adswap shards --overwrite"):
        next(iter(train_loader(data, AudioConfig(clip_seconds=2), 0, SharedEpoch())))
class WorkerThreads(IterableDataset):
    def __iter__(self):
        yield torch.get_num_threads()


def test_each_loader_worker_runs_one_thread():
    # what trainer.distributed.loader_workers counts on when it fits workers to cores
    assert sorted(_loader(WorkerThreads(), workers=2)) == [1, 1]
