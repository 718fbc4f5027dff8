"""`adswap eval`: text-to-music and music-to-text retrieval on eval sets.

The paper's protocol: every caption ranks the clips by cosine similarity; R@1, R@5,
R@10 and median rank, on random subsets of `subset_size` (500) tracks, seeded, averaged
over `subsets` draws, with their spread. A track with several clips is one item (the
mean of its clip embeddings, or its first clip); a track with several captions (Song
Describer) gives one query per caption. Music-to-text: each track ranks the subset's
captions; its rank is that of its best caption. Results are per caption language.

Embeddings are computed once per run, checkpoint and set, and cached in
RUN/eval/<set>/embeddings.pt. RUN/eval/report.{json,md} keep every set the run was
evaluated on: a new set is added, a set evaluated again is replaced, and each set says
which checkpoint and protocol its numbers come from.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from schemas.atomic import atomic_path
from schemas.sample import EVAL_SET_REBUILD, read_sample_json
from trainer.bootstrap import METRICS, describe, paired_bootstrap
from trainer.checkpoint import checkpoint_path, file_sha256, load_model
from trainer.config import EvalConfig, ModelConfig
from trainer.data import crop, decode_audio, sample_name, shard_urls
from trainer.metrics import pool_tracks, ranks
from trainer.model import DualEncoder
from trainer.precision import autocast_for, uses_bf16
from trainer.zero_shot import baseline_run

KS = (1, 5, 10)
CURVE_K = 50


def card_facts(report: dict) -> dict:
    """What the data card's `evaluation` section says of a run: R@10 and MR per set and
    language."""
    return {f"{name} ({language})": {"R@10": round(m["t2m_R@10"]["mean"], 2),
                                     "MR": round(m["t2m_MR"]["mean"], 2)}
            for name, entry in report["sets"].items()
            for language, m in entry["languages"].items()}


@torch.no_grad()
def embed_set(model: DualEncoder, folder: Path, sample_rate: int, clip_seconds: float,
              batch_size: int, device, autocast=nullcontext) -> dict:
    """Clip and caption embeddings of an eval set, in shard order, each model call
    under `autocast` (the run's training precision)."""
    frames = round(sample_rate * clip_seconds)
    track_ids: list[str] = []
    clip_track: list[int] = []
    captions: list[tuple[int, str, str]] = []  # (track index, language, text)
    clips: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            with autocast():
                clips.append(model.encode_audio(torch.stack(pending).to(device)).float()
                             .cpu())
            pending.clear()

    urls, _ = shard_urls(folder, "test")
    if not urls:
        raise ValueError(f"{folder} has no test shards with samples")
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = read_sample_json(sample["json"], sample_name(sample), EVAL_SET_REBUILD)
        if meta["sample_rate"] != sample_rate:
            raise ValueError(f"{folder}: clips are {meta['sample_rate']} Hz but the model "
                             f"takes {sample_rate} Hz; import the set at that rate")
        if not track_ids or track_ids[-1] != meta["track_id"]:
            track_ids.append(meta["track_id"])
            captions += [(len(track_ids) - 1, v["language"], v["text"]) for v in meta["views"]]
        clip_track.append(len(track_ids) - 1)
        pending.append(crop(decode_audio(sample), frames, None))
        if len(pending) == batch_size:
            flush()
    flush()
    texts = [text for _, _, text in captions]
    with autocast():
        text = torch.cat([model.encode_text(model.tokenize(texts[i:i + batch_size])
                                            .to(device)).float().cpu()
                          for i in range(0, len(texts), batch_size)]) \
            if texts else torch.zeros(0, model.dim)
    return {"track_ids": track_ids, "clip_track": torch.tensor(clip_track),
            "clips": torch.cat(clips), "caption_track": torch.tensor([c[0] for c in captions]),
            "caption_language": [c[1] for c in captions], "text": text}


def music_to_text_ranks(items: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor,
                        chunk: int = 1024) -> torch.Tensor:
    """For each item, the 1-based rank of its best caption: 1 + the captions of other
    items scoring at least as high (ties count against it, as in `ranks`);
    `owner[j]` is caption j's item index."""
    out = []
    for start in range(0, len(items), chunk):
        scores = items[start:start + chunk] @ texts.T
        mine = owner[None, :] == torch.arange(start, start + len(scores))[:, None]
        best = scores.masked_fill(~mine, -torch.inf).max(1).values
        out.append((scores.masked_fill(mine, -torch.inf) >= best[:, None]).sum(1) + 1)
    return torch.cat(out)


def subset_draws(caption_track: torch.Tensor, subsets: int, size: int,
                 seed: int) -> list[np.ndarray]:
    """The protocol's subsets: `subsets` random draws of `size` tracks with captions, or
    one subset of all of them when there are no more than `size`."""
    eligible = torch.unique(caption_track).numpy()
    rng = np.random.default_rng(seed)
    return [eligible] if len(eligible) <= size else \
        [np.sort(rng.choice(eligible, size, replace=False)) for _ in range(subsets)]


def _subset(tracks: torch.Tensor, text: torch.Tensor, caption_track: torch.Tensor,
            draw: np.ndarray):
    """A subset's items, its queries (a mask over `text`) and each query's target."""
    position = torch.full((len(tracks),), -1, dtype=torch.long)
    position[torch.from_numpy(draw)] = torch.arange(len(draw))
    keep = position[caption_track] >= 0
    return tracks[draw], keep, position[caption_track[keep]]


def subset_metrics(tracks: torch.Tensor, text: torch.Tensor, caption_track: torch.Tensor,
                   subsets: int, size: int, seed: int) -> dict:
    """Both directions on the protocol's subsets (`subset_draws`); mean and spread."""
    draws = subset_draws(caption_track, subsets, size, seed)
    results: dict[str, list] = {}
    curves = []
    for draw in draws:
        items, keep, targets = _subset(tracks, text, caption_track, draw)
        queries = text[keep]
        t2m = ranks(queries, items, targets)
        m2t = music_to_text_ranks(items, queries, targets)
        for direction, rank in (("t2m", t2m), ("m2t", m2t)):
            for k in KS:
                results.setdefault(f"{direction}_R@{k}", []).append(
                    float((rank <= k).float().mean()) * 100)
            results.setdefault(f"{direction}_MR", []).append(float(rank.float().quantile(0.5)))
        curves.append([float((t2m <= k).float().mean()) * 100 for k in range(1, CURVE_K + 1)])
    summary = {name: {"mean": float(np.mean(v)), "std": float(np.std(v))}
               for name, v in results.items()}
    summary["subsets"] = len(draws)
    summary["subset_tracks"] = int(len(draws[0]))
    summary["queries"] = int(len(text))
    summary["t2m_curve"] = np.mean(curves, axis=0).round(3).tolist()
    return summary


def t2m_rank_matrix(tracks: torch.Tensor, text: torch.Tensor, caption_track: torch.Tensor,
                    draws: list[np.ndarray]) -> np.ndarray:
    """Every query's text-to-music rank in every subset, (subsets, queries), 0 where its
    track is not in the subset: what the paired bootstrap resamples."""
    out = np.zeros((len(draws), len(text)), dtype=np.int64)
    for i, draw in enumerate(draws):
        items, keep, targets = _subset(tracks, text, caption_track, draw)
        out[i, keep.numpy()] = ranks(text[keep], items, targets).numpy()
    return out


def load_ranks(run: Path, set_name: str, language: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's saved (query ids, rank matrix) for one set and language."""
    path = Path(run) / "eval" / set_name / "ranks.npz"
    if not path.exists():
        raise ValueError(f"{path} is missing: evaluate {run} on {set_name} first "
                         "(`adswap eval`)")
    with np.load(path) as saved:
        if language not in saved:
            raise ValueError(f"{path} has no {language!r} queries")
        return saved[f"{language}.queries"], saved[language]


def paired_runs(runs_a: list[Path], runs_b: list[Path], set_name: str, language: str,
                replicates: int) -> dict:
    """A - B in R@1, R@10 and MR with a 95% interval: the paired bootstrap over the
    queries of `set_name` (and over seeds: runs_a[i] and runs_b[i] share seed i)."""
    loaded_a = [load_ranks(r, set_name, language) for r in runs_a]
    loaded_b = [load_ranks(r, set_name, language) for r in runs_b]
    first = loaded_a[0][0]
    for run, (queries, _) in zip([*runs_a, *runs_b], [*loaded_a, *loaded_b], strict=True):
        if not np.array_equal(queries, first):
            raise ValueError(f"{run} was scored on other queries of {set_name} than "
                             f"{runs_a[0]}; evaluate both on the same set")
    return paired_bootstrap([m for _, m in loaded_a], [m for _, m in loaded_b], replicates)


def evaluate(config: EvalConfig) -> dict:
    config = dataclasses.replace(config, run=baseline_run(config.run, config.baselines))
    device = torch.device("cuda" if config.device in ("auto", "cuda") and
                          torch.cuda.is_available() else "cpu")
    checkpoint = checkpoint_path(config.run, config.checkpoint)
    model, train_config = load_model(config.run, checkpoint, device.type)
    # scored as it was trained: bf16 autocast on a GPU where the run trained so
    bf16 = uses_bf16(train_config.optim.precision, device)
    if bf16:
        model.cast_frozen(torch.bfloat16)
    checkpoint_sha = file_sha256(checkpoint)
    audio = train_config.model.audio
    report = {"run": str(config.run), "checkpoint": checkpoint.name,
              "checkpoint_sha256": checkpoint_sha[:16],
              "protocol": {"subsets": config.subsets, "subset_size": config.subset_size,
                           "seed": config.seed, "pooling": config.pooling},
              "model": {**_towers(train_config.model), "zero_shot": checkpoint.stem ==
                        "pretrained",
                        "p_cap": train_config.data.p_cap,
                        "textswap": train_config.swap.enabled},
              "sets": {}}
    for folder in config.sets:
        folder = Path(folder)
        name, manifest = _set_name(folder)
        cache = Path(config.run) / "eval" / name / "embeddings.pt"
        key = {"checkpoint": checkpoint_sha, "set": file_sha256(folder / "sizes.json") + (
            file_sha256(manifest) if manifest.exists() else ""), "clip_seconds": audio.clip_seconds,
            "bf16": bf16}
        data = _cached_embeddings(cache, key, partial(
            embed_set, model, folder, audio.sample_rate, audio.clip_seconds,
            config.batch_size, device, autocast_for(train_config.optim.precision, device)))
        tracks = pool_tracks(data["clips"], data["clip_track"], len(data["track_ids"]),
                             config.pooling)
        per_language = _per_language(data, tracks, config)
        _save_ranks(data, tracks, config, cache.parent / "ranks.npz")
        report["sets"][name] = {"path": str(folder), "tracks": len(data["track_ids"]),
                                "clips": len(data["clip_track"]),
                                "captions": len(data["caption_language"]),
                                "checkpoint": checkpoint.name,
                                "checkpoint_sha256": checkpoint_sha[:16],
                                "protocol": report["protocol"], "languages": per_language}
    for other in config.compare:
        report.setdefault("comparisons", {})[str(other)] = _compare(config, other, report)
    _write_report(report, Path(config.run) / "eval")
    return report


def _towers(model: ModelConfig) -> dict:
    if model.kind == "clap":
        return {"audio": f"CLAP {model.clap.path}", "text": f"CLAP {model.clap.path}"}
    return {"audio": model.audio.kind, "text": model.text.path}


def _set_name(folder: Path) -> tuple[str, Path]:
    """The eval set's name (its manifest's, else the folder's) and its manifest path."""
    manifest = folder / "manifest.json"
    name = json.loads(manifest.read_text()).get("name", folder.name) \
        if manifest.exists() else folder.name
    return name, manifest


def _cached_embeddings(cache: Path, key: dict, embed) -> dict:
    """The set's embeddings from `cache` when its key (checkpoint, set files, clip
    length) matches, else from `embed()`, then cached."""
    cached = torch.load(cache, weights_only=True) if cache.exists() else None
    if cached is not None and cached.get("key") == key:
        return cached["data"]
    data = embed()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "data": data}, cache)
    return data


def _per_language(data: dict, tracks: torch.Tensor, config: EvalConfig) -> dict:
    per_language = {}
    for language in sorted(set(data["caption_language"])):
        mask = torch.tensor([lang == language for lang in data["caption_language"]])
        per_language[language] = subset_metrics(
            tracks, data["text"][mask], data["caption_track"][mask], config.subsets,
            config.subset_size, config.seed)
    return per_language


def _compare(config: EvalConfig, other: Path, report: dict) -> dict:
    # the other run under the same protocol, so both rank the same queries and subsets
    other = baseline_run(other, config.baselines)
    evaluate(dataclasses.replace(config, run=other, compare=()))
    return {name: {language: paired_runs([config.run], [other], name, language,
                                         config.replicates)
                   for language in entry["languages"]}
            for name, entry in report["sets"].items()}


def _write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["sets"] = {**_earlier_sets(out / "report.json"), **report["sets"]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render(report))
    plot(report, out)


def _earlier_sets(path: Path) -> dict:
    """The sets an earlier `adswap eval` of this run reported, kept beside this one's."""
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["sets"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); move it away to start the "
                         "run's evaluation report afresh") from err
def _save_ranks(data: dict, tracks: torch.Tensor, config: EvalConfig, path: Path) -> None:
    """Per language, every query's text-to-music rank in every subset and the query ids
    (track id and the caption's ordinal on it), for paired comparisons of runs."""
    saved: dict[str, np.ndarray] = {}
    for language in sorted(set(data["caption_language"])):
        index = [i for i, lang in enumerate(data["caption_language"]) if lang == language]
        owner = data["caption_track"][index]
        draws = subset_draws(owner, config.subsets, config.subset_size, config.seed)
        saved[language] = t2m_rank_matrix(tracks, data["text"][index], owner, draws)
        seen: dict[int, int] = {}
        ids = []
        for track in owner.tolist():
            seen[track] = seen.get(track, -1) + 1
            ids.append(f"{data['track_ids'][track]}#{seen[track]}")
        saved[f"{language}.queries"] = np.array(ids)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **saved)


def render(report: dict) -> str:
    lines = [f"# Retrieval: {report['run']}", "",
             *(["Zero-shot: the pretrained model as it is, untrained.", ""]
               if report["model"].get("zero_shot") else []),
             f"Checkpoint `{report['checkpoint']}` ({report['checkpoint_sha256']}); audio "
             f"{report['model']['audio']}, text {report['model']['text']}, p_cap "
             f"{report['model']['p_cap']}, TextSwap {report['model']['textswap']}. "
             f"{report['protocol']['subsets']} random subsets of "
             f"{report['protocol']['subset_size']} tracks (seed {report['protocol']['seed']}), "
             f"clips pooled by {report['protocol']['pooling']}; mean ± std over subsets.", ""]
    for name, entry in report["sets"].items():
        lines += [f"## {name}", "", f"{entry['tracks']} tracks, {entry['clips']} clips, "
                  f"{entry['captions']} captions.{_measured(entry, report)}", "",
                  "| language | direction | R@1 | R@5 | R@10 | MR | queries | subsets |",
                  "|---|---|---|---|---|---|---|---|"]
        for language, m in entry["languages"].items():
            for direction, label in (("t2m", "text→music"), ("m2t", "music→text")):
                cells = [f"{m[f'{direction}_{k}']['mean']:.1f} ± {m[f'{direction}_{k}']['std']:.1f}"
                         for k in ("R@1", "R@5", "R@10", "MR")]
                lines.append(f"| {language} | {label} | " + " | ".join(cells) +
                             f" | {m['queries']} | {m['subsets']} x {m['subset_tracks']} |")
        lines.append("")
    for other, sets in report.get("comparisons", {}).items():
        lines += [f"## Paired comparison: this run - `{other}`", "",
                  "Difference in text-to-music retrieval (this run minus the other), with "
                  "a 95% interval from a paired bootstrap over queries; * = the interval "
                  "excludes 0. Higher R@k and lower MR are better.", "",
                  "| set | language | " + " | ".join(f"Δ {m}" for m in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for name, by_language in sets.items():
            for language, paired in by_language.items():
                lines.append(f"| {name} | {language} | " +
                             " | ".join(describe(paired[m]) for m in METRICS) + " |")
        lines.append("")
    lines += ["![recall at k](recall_at_k.png) ![R@10 per set](r10_by_set.png)", ""]
    return "\n".join(lines)


def _measured(entry: dict, report: dict) -> str:
    """Where a set's numbers come from, when not from this report's checkpoint and
    protocol (an earlier evaluation kept in the report)."""
    if "checkpoint_sha256" not in entry:
        return " Measured by an earlier `adswap eval` that did not record its checkpoint."
    if entry["checkpoint_sha256"] == report["checkpoint_sha256"] and \
            entry["protocol"] == report["protocol"]:
        return ""
    protocol = entry["protocol"]
    return (f" Measured earlier: checkpoint `{entry['checkpoint']}` "
            f"({entry['checkpoint_sha256']}), {protocol['subsets']} subsets of "
            f"{protocol['subset_size']} tracks (seed {protocol['seed']}), clips pooled by "
            f"{protocol['pooling']}.")


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    labels, values, spreads = [], [], []
    for name, entry in report["sets"].items():
        for language, m in entry["languages"].items():
            ax.plot(range(1, CURVE_K + 1), m["t2m_curve"], label=f"{name} ({language})")
            labels.append(f"{name}\n{language}")
            values.append(m["t2m_R@10"]["mean"])
            spreads.append(m["t2m_R@10"]["std"])
    ax.set_xlabel("k")
    ax.set_ylabel("text→music recall@k (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_at_k.png", metadata={"Software": None})
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(3, 1.2 * len(values)), 3.5), dpi=100)
    ax.bar(range(len(values)), values, yerr=spreads, color="#3b6ea5", capsize=4)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("text→music R@10 (%)")
    fig.tight_layout()
    fig.savefig(out / "r10_by_set.png", metadata={"Software": None})
    plt.close(fig)
