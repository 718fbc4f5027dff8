"""The `adswap` command: a thin Typer layer over each stage's typed config.

Stages are imported inside their command so `adswap --help` stays fast and a stage's
heavy dependencies (torch, vLLM) are only needed by the commands that use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(
    name="adswap",
    help="Augment, Drop & Swap: train music-text retrieval models from a tagged catalog.\n\n"
    "Stages, in order: demo-data -> captions -> curate -> shards -> train -> eval -> card.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated option ('genre, mood,instrument') as a tuple of names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(Path("data/demo"), help="Folder to write the demo catalog into."),
    tracks: int = typer.Option(400, min=1, help="Number of tracks to render."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same bytes."),
    sample_rate: int = typer.Option(22050, help="Audio sample rate in Hz."),
    min_duration: float = typer.Option(10.0, help="Shortest track, in seconds."),
    max_duration: float = typer.Option(15.0, help="Longest track, in seconds."),
    workers: int = typer.Option(0, min=0, help="Render processes; 0 = all cores."),
) -> None:
    """Render a demo catalog: MIDI arrangements that follow their tags, as FLAC audio.

    Writes catalog.parquet, audio/*.flac, reference_captions.parquet (test split) and
    demo.json into OUT. A rerun with the same settings resumes where it stopped.
    """
    from pipeline.demo_data import DemoConfig, run

    try:
        config = DemoConfig(out=out, tracks=tracks, seed=seed, sample_rate=sample_rate,
                            min_duration_s=min_duration, max_duration_s=max_duration,
                            workers=workers)
        stats = run(config)
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(f"demo-data: {stats.tracks} tracks ({stats.rendered} rendered, "
               f"{stats.skipped} already there), {stats.audio_seconds / 3600:.2f} h of audio, "
               f"splits {stats.splits}, {stats.seconds:.1f} s -> {out}")


@app.command("validate")
def validate(
    catalog: Path = typer.Argument(..., help="Catalog: .parquet, .csv, .jsonl or a "
                                   "`datasets` directory."),
    categories: str = typer.Option("genre,mood,instrument",
                                   help="Comma-separated tag categories."),
    audio_root: Path = typer.Option(None, help="Folder audio paths are resolved in "
                                    "(default: the catalog's folder)."),
) -> None:
    """Check a catalog against the schema and list every problem, with file, row and field."""
    from schemas.catalog import CatalogConfig, read_catalog

    try:
        config = CatalogConfig(categories=_names(categories), audio_root=audio_root)
        result = read_catalog(catalog, config)
    except (ValueError, OSError) as err:  # SchemaError is a ValueError
        _fail(str(err))
    for problem in result.rejects:
        typer.echo(f"rejected: {problem}")
    typer.echo(f"{catalog}: {len(result.tracks)} valid tracks, {len(result.rejects)} "
               "problems in rejected rows")
    if result.rejects:
        raise typer.Exit(1)


def _options_with_file(flags: dict, config_file: Path | None) -> dict:
    """A YAML config file supplies options; flags given on the command line win."""
    options: dict = {}
    if config_file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            _fail(f"cannot read config file {config_file}: {err}")
        if not isinstance(loaded, dict):
            _fail(f"{config_file} must be a mapping of option names to values")
        options.update({k.replace("-", "_"): v for k, v in loaded.items()})
    options.update({k: v for k, v in flags.items() if v is not None})
    return options


@app.command()
def captions(
    catalog: Path = typer.Option(None, help="Catalog to caption (see `adswap validate`)."),
    out: Path = typer.Option(None, help="Folder for the views Parquet shards."),
    config_file: Path = typer.Option(None, "--config", help="YAML file with any of these "
                                     "options (underscored names); flags win over it."),
    engine: str = typer.Option(None, help="vllm (default), openai or template (rule-based, "
                               "no model)."),
    model: str = typer.Option(None, help="'smollm2' (bundled, default), a local folder or a "
                              "hub id."),
    revision: str = typer.Option(None, help="Model revision (hub models)."),
    template: str = typer.Option(None, help="Prompt template id or YAML path "
                                 "(default caption-v1)."),
    languages: str = typer.Option(None, help="Comma-separated language codes (default en)."),
    n_views: int = typer.Option(None, help="Views per track (default 10)."),
    keep_prob: float = typer.Option(None, help="Chance each tag is kept in a view "
                                    "(default 0.5)."),
    min_per_category: int = typer.Option(None, help="Tags kept at least, per non-empty "
                                         "category (default 1)."),
    full_view: bool = typer.Option(None, "--full-view/--no-full-view",
                                   help="Add one view written from all tags."),
    seed: int = typer.Option(None, help="Seed for view planning (default 0)."),
    temperature: float = typer.Option(None, help="Sampling temperature (default 0.7)."),
    top_p: float = typer.Option(None, help="Nucleus sampling (default 0.95)."),
    max_tokens: int = typer.Option(None, help="Longest caption in tokens (default 64)."),
    chunk_tracks: int = typer.Option(None, help="Tracks per output shard (default 128)."),
    batch_requests: int = typer.Option(None, help="Requests per engine call (default 256)."),
    rank: int = typer.Option(None, help="This job's share (default: SLURM array task, or 0)."),
    world_size: int = typer.Option(None, help="Number of jobs (default: SLURM array size, "
                                   "or 1)."),
    tensor_parallel_size: int = typer.Option(None, help="GPUs per model (vllm)."),
    dtype: str = typer.Option(None, help="Model dtype (vllm; default float32 on CPU)."),
    max_model_len: int = typer.Option(None, help="Context length (vllm, default 2048)."),
    url: str = typer.Option(None, help="OpenAI-compatible server (openai engine)."),
    concurrency: int = typer.Option(None, help="Requests in flight (openai engine)."),
    timeout_s: float = typer.Option(None, "--timeout", help="Seconds per request (openai)."),
    retries: int = typer.Option(None, help="Retries per request (openai, default 3)."),
    categories: str = typer.Option(None, help="Comma-separated tag categories."),
    cache_dir: Path = typer.Option(None, help="Where the bundled model is converted to "
                                   "(default ~/.cache/adswap or $ADSWAP_CACHE)."),
) -> None:
    """Write caption views with an LLM (Augment + View Dropout), as resumable Parquet shards.

    A rerun finishes only what is missing; a changed prompt, model or sampling setting
    regenerates exactly the views it affects.
    """
    flags = {k: v for k, v in locals().items() if k != "config_file"}
    from pipeline.captions.stage import config_from_options, run
    from pipeline.sharding import resolve_rank

    options = _options_with_file(flags, config_file)
    try:
        options["rank"], options["world_size"] = resolve_rank(options.get("rank"),
                                                              options.get("world_size"))
        stats = run(config_from_options(options))
    except (ValueError, OSError, RuntimeError) as err:
        _fail(str(err))
    typer.echo(f"captions: {stats.views_generated} views generated, {stats.views_reused} kept, "
               f"{stats.failures} failed (retried on the next run); flags "
               f"{dict(stats.flags)}; {stats.seconds:.1f} s -> {options['out']}")
    if stats.failures:
        raise typer.Exit(1)


@app.command()
def curate(
    views: Path = typer.Option(..., help="Folder of views Parquet files (from `captions`)."),
    catalog: Path = typer.Option(..., help="The catalog the views were written from."),
    out: Path = typer.Option(..., help="Folder for curated/, rejected/, the swap "
                             "dictionary and the report."),
    settings: Path = typer.Option(None, help="Curation YAML (thresholds, rules on/off); "
                                  "default pipeline/curate/curation.yaml."),
    extras: Path = typer.Option(None, help="YAML of extra descriptors and synonyms for the "
                                "swap dictionary."),
    eval_set: list[Path] = typer.Option(None, help="Evaluation set to decontaminate against "
                                        "(CSV/JSONL/Parquet with track_id, artist or "
                                        "caption); repeatable."),
    categories: str = typer.Option("genre,mood,instrument", help="Tag categories."),
    memory_limit: str = typer.Option("2.5GB", help="DuckDB memory limit."),
) -> None:
    """Filter views with DuckDB rules, assign leakage-free splits, build the TextSwap
    dictionary, and report what each rule removed and why."""
    from pipeline.curate.stage import DEFAULT_SETTINGS, CurateConfig, run

    try:
        stats = run(CurateConfig(
            views=views, catalog=catalog, out=out, settings=settings or DEFAULT_SETTINGS,
            extras=extras, eval_sets=tuple(eval_set or ()),
            categories=_names(categories),
            memory_limit=memory_limit))
    except (ValueError, OSError) as err:
        _fail(str(err))
    removed = ", ".join(f"{rule} {n}" for rule, n in stats.by_rule.items() if n)
    typer.echo(f"curate: {stats.views} views, {stats.curated} curated, {stats.rejected} "
               f"rejected ({removed or 'none'}); {stats.seconds:.1f} s -> {out}/report.md")


@app.command()
def shards(
    curated: Path = typer.Option(..., help="Output folder of `adswap curate` (curated/ and "
                                 "swap_dictionary.json)."),
    catalog: Path = typer.Option(..., help="The catalog the views were written from."),
    out: Path = typer.Option(..., help="Folder for the tars, sizes.json and manifest.json."),
    sample_rate: int = typer.Option(16000, help="Clip sample rate in Hz (the model's input "
                                    "rate: HTS-AT 48000, MERT 24000)."),
    clip_seconds: float = typer.Option(10.0, help="Clip length in seconds."),
    clips_per_track: int = typer.Option(1, min=1, help="Clips per track (position 'all' "
                                        "takes every window instead)."),
    position: str = typer.Option("centre", help="Where clips are cut: start, centre, random "
                                 "(seeded) or all (every non-overlapping window)."),
    audio_format: str = typer.Option("flac", help="flac or wav (16-bit)."),
    silence_db: float = typer.Option(-60.0, help="Clips whose peak is below this are "
                                     "silence and left out."),
    max_samples: int = typer.Option(1000, min=1, help="Samples per shard, at most."),
    max_bytes: int = typer.Option(1 << 30, help="Bytes per shard, at most (estimated from "
                                  "16-bit PCM size, an upper bound for FLAC)."),
    seed: int = typer.Option(0, help="Seed for the track order and random clip positions."),
    audio_root: Path = typer.Option(None, help="Folder audio paths resolve in (default: the "
                                    "catalog's folder); nothing outside it is read."),
    categories: str = typer.Option("genre,mood,instrument", help="Tag categories."),
    workers: int = typer.Option(0, min=0, help="Worker processes; 0 = all cores."),
    rank: int = typer.Option(None, help="This job's share (default: SLURM array task, or 0)."),
    world_size: int = typer.Option(None, help="Number of jobs (default: SLURM array size, "
                                   "or 1)."),
    overwrite: bool = typer.Option(False, help="Replace shards made from other inputs or "
                                   "settings (one rank only)."),
    card_dir: Path = typer.Option(None, help="Data card folder (data_cards/<dataset>) to add "
                                  "a shards section to."),
) -> None:
    """Pack audio clips and curated views into WebDataset tars with reproducible bytes.

    A rerun after a crash builds only the shards that are missing; a bad audio file is
    recorded in rejects.jsonl and never stops the stage.
    """
    from pipeline.card import update_card
    from pipeline.sharding import resolve_rank
    from pipeline.shards.audio import ClipConfig
    from pipeline.shards.stage import ShardsConfig, card_facts, run
    try:
        rank, world_size = resolve_rank(rank, world_size)
        config = ShardsConfig(
            curated=curated, catalog=catalog, out=out,
            clips=ClipConfig(sample_rate=sample_rate, clip_seconds=clip_seconds,
                             clips_per_track=clips_per_track, position=position,
                             audio_format=audio_format, seed=seed, silence_db=silence_db),
            categories=_names(categories),
            audio_root=audio_root, max_samples=max_samples, max_bytes=max_bytes, seed=seed,
            workers=workers, rank=rank, world_size=world_size, overwrite=overwrite)
        stats = run(config)
        if stats.complete and card_dir is not None:
            update_card(card_dir, "shards", card_facts(out))
    except (ValueError, OSError) as err:
        _fail(str(err))
    if not stats.complete:
        typer.echo(f"shards: built {stats.built} of this rank's shards ({stats.skipped} were "
                   "done); other ranks still have shards to build")
        return
    rejected = ", ".join(f"{k} {n}" for k, n in stats.rejects.items()) or "none"
    typer.echo(f"shards: {stats.samples} samples from {stats.tracks} tracks in {stats.shards} "
               f"shards ({stats.built} built, {stats.skipped} already done), "
               f"{stats.audio_hours:.2f} h, {stats.bytes / 1e6:.1f} MB; rejected: {rejected}; "
               f"{stats.seconds:.1f} s -> {out}/report.md")


@app.command()
def train(
    config_file: Path = typer.Option(None, "--config", help="YAML config (sections data, "
                                     "model, swap, optim, run, dist); defaults are the CPU "
                                     "demo."),
    overrides: list[str] = typer.Option(None, "--set", help="Override one setting, e.g. "
                                        "--set optim.lr=5e-4 --set data.p_cap=0.5; "
                                        "repeatable."),
    resume: bool = typer.Option(False, help="Continue the run in run.out from its last "
                                "checkpoint, with its saved config (plus any --set)."),
    card_dir: Path = typer.Option(None, help="Data card folder (data_cards/<dataset>) to "
                                  "add this run to."),
) -> None:
    """Train the DuET-MC dual encoder with view sampling, View Dropout and TextSwap.

    One process here; for many GPUs start it with torchrun (`make train NPROC=8`).
    """
    from trainer.config import load_config
    from trainer.train import train as run_training
    _exit_on_sigterm()
    try:
        config = load_config(config_file, overrides or [])
        if resume:
            saved = config.run.out / "config.yaml"
            if not saved.exists():
                _fail(f"nothing to resume: {saved} does not exist")
            config = load_config(saved, overrides or [])
        state = run_training(config, resume=resume)
        if card_dir is not None and int(os.environ.get("RANK", 0)) == 0:
            _add_run_to_card(card_dir, config, state)
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(f"train: {state.epoch} epochs, {state.step} steps"
               + (f" ({state.stopped})" if state.stopped else "")
               + f"; best validation loss {state.best_valid_loss:.4f} -> {config.run.out}")


def _exit_on_sigterm() -> None:
    """SIGTERM (kill, SLURM preemption) unwinds like Ctrl-C, so the loader's worker
    processes are shut down instead of outliving the run."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _add_run_to_card(card_dir: Path, config, state) -> None:
    """The card's `training` section lists every run trained on the dataset."""
    import json

    from pipeline.card import update_card
    rows = [json.loads(line) for line in (config.run.out / "metrics.jsonl").read_text()
            .splitlines()]
    last = [r for r in rows if r["type"] == "epoch"][-1:] or [{}]
    update_card(card_dir, "training", {
        "epochs": state.epoch, "steps": state.step, "stopped": state.stopped or None,
        "audio": config.model.audio.kind, "text": config.model.text.path,
        "p_cap": config.data.p_cap, "textswap": config.swap.enabled,
        "best_valid_loss": None if state.best_valid_loss == float("inf")
        else round(state.best_valid_loss, 4),
        "last_valid_R@10": last[0].get("valid_R@10")}, key=str(config.run.out))


@app.command("import-eval")
def import_eval(
    file: Path = typer.Option(..., help="CSV, TSV, JSONL or Parquet: a caption column "
                              "(`caption` or `text`) and an `audio` path or a `track_id` "
                              "(with --catalog); optional `language`, `caption_id`."),
    out: Path = typer.Option(..., help="Folder for the eval shards."),
    name: str = typer.Option("", help="The set's name in reports (default: OUT's name)."),
    catalog: Path = typer.Option(None, help="Catalog to find audio by track_id."),
    audio_root: Path = typer.Option(None, help="Folder audio paths resolve in (default: the "
                                    "file's folder, or the catalog's)."),
    sample_rate: int = typer.Option(16000, help="The model's input rate."),
    clip_seconds: float = typer.Option(10.0, help="Clip length: the model's input length."),
    position: str = typer.Option("all", help="Clips per track: all (every window, "
                                 "averaged at eval), start, centre or random."),
    clips_per_track: int = typer.Option(1, min=1, help="Clips for start/centre/random."),
    workers: int = typer.Option(0, min=0, help="Worker processes; 0 = all cores."),
) -> None:
    """Turn an evaluation set (audio + human captions) into eval shards, with the shards
    stage's audio handling. Bad rows and bad audio are reported, never fatal."""
    from pipeline.eval_sets import ImportConfig, run
    from pipeline.shards.audio import ClipConfig
    try:
        stats = run(ImportConfig(file=file, out=out, name=name, catalog=catalog,
                                 audio_root=audio_root, workers=workers,
                                 clips=ClipConfig(sample_rate=sample_rate,
                                                  clip_seconds=clip_seconds,
                                                  position=position,
                                                  clips_per_track=clips_per_track)))
    except (ValueError, OSError) as err:
        _fail(str(err))
    rejected = ", ".join(f"{k} {n}" for k, n in stats.rejects.items()) or "none"
    typer.echo(f"import-eval: {stats.tracks} tracks, {stats.captions} captions, "
               f"{stats.samples} clips from {stats.rows} rows; rejected: {rejected} -> {out}")


@app.command("translate-captions")
def translate_captions(
    file: Path = typer.Option(..., help="Caption file (CSV, TSV, JSONL or Parquet), as "
                              "`import-eval` reads it."),
    out: Path = typer.Option(..., help="Output file (.parquet, .jsonl, .csv or .tsv): the "
                             "original rows plus the translations."),
    languages: str = typer.Option("de,fr,it,es", help="Target language codes."),
    source: str = typer.Option("en", help="Language of the captions to translate."),
    engine: str = typer.Option("vllm", help="vllm or openai."),
    model: str = typer.Option("smollm2", help="'smollm2' (bundled), a folder or a hub id."),
    url: str = typer.Option("http://127.0.0.1:8000", help="Server (openai engine)."),
    max_tokens: int = typer.Option(128, help="Longest translation in tokens."),
    cache_dir: Path = typer.Option(None, help="Where the bundled model is converted to."),
) -> None:
    """Translate eval captions with the caption stage's LLM engine (run it in .venv-llm),
    for multilingual evaluation: import the result with `adswap import-eval`."""
    from pipeline.captions.engines import EngineConfig, Sampling
    from pipeline.translate import TranslateConfig, run
    try:
        stats = run(TranslateConfig(
            file=file, out=out, source=source,
            languages=_names(languages),
            engine=EngineConfig(engine=engine, model=model, url=url),
            sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
            **({"cache_dir": cache_dir} if cache_dir else {})))
    except (ValueError, OSError, RuntimeError) as err:
        _fail(str(err))
    failed = ", ".join(f"{k} {n}" for k, n in stats.failed.items()) or "none"
    typer.echo(f"translate-captions: {stats.source_rows} captions, {stats.translated} "
               f"translations, failed: {failed} -> {out}")


@app.command("eval")
def evaluate(
    run: Path = typer.Argument(..., help="A run folder from `adswap train`."),
    sets: list[Path] = typer.Option(..., "--set", help="Eval set folder (from `adswap "
                                    "import-eval`); repeatable."),
    subsets: int = typer.Option(10, help="Random subsets to average over."),
    subset_size: int = typer.Option(500, help="Tracks per subset (the paper's 500)."),
    seed: int = typer.Option(0, help="Seed for the subsets."),
    pooling: str = typer.Option("mean", help="A track's clips: mean of embeddings or "
                                "first clip."),
    checkpoint: str = typer.Option("best", help="best or last."),
    card_dir: Path = typer.Option(None, help="Data card folder to add the results to."),
) -> None:
    """Text-to-music and music-to-text retrieval: R@1/5/10 and median rank on random
    500-track subsets, per set and caption language. Writes RUN/eval/report.{json,md}
    and plots."""
    from trainer.evaluate import EvalConfig
    from trainer.evaluate import evaluate as run_eval
    try:
        report = run_eval(EvalConfig(run=run, sets=tuple(sets), subsets=subsets,
                                     subset_size=subset_size, seed=seed, pooling=pooling,
                                     checkpoint=checkpoint))
        if card_dir is not None:
            _add_eval_to_card(card_dir, report)
    except (ValueError, OSError) as err:
        _fail(str(err))
    for name, entry in report["sets"].items():
        for language, m in entry["languages"].items():
            typer.echo(f"eval {name} ({language}): text->music R@10 "
                       f"{m['t2m_R@10']['mean']:.1f} ± {m['t2m_R@10']['std']:.1f}, "
                       f"MR {m['t2m_MR']['mean']:.1f}; music->text R@10 "
                       f"{m['m2t_R@10']['mean']:.1f}")
    typer.echo(f"report: {run / 'eval' / 'report.md'}")


def _add_eval_to_card(card_dir: Path, report: dict) -> None:
    """The card's `evaluation` section lists every evaluated run."""
    from pipeline.card import update_card
    update_card(card_dir, "evaluation", {
        f"{name} ({language})": {"R@10": round(m["t2m_R@10"]["mean"], 2),
                                 "MR": round(m["t2m_MR"]["mean"], 2)}
        for name, entry in report["sets"].items()
        for language, m in entry["languages"].items()}, key=report["run"])


@app.command()
def ablation(
    config_file: Path = typer.Option(Path("trainer/configs/demo.yaml"), "--config",
                                     help="Base training config for every row."),
    overrides: list[str] = typer.Option(None, "--set", help="Override for every row, e.g. "
                                        "--set data.shards=...; repeatable."),
    eval_sets: list[Path] = typer.Option(..., "--eval-set", help="Eval set folder; the "
                                         "table uses the first. Repeatable."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    out: Path = typer.Option(Path("runs/ablation"), help="Folder for the runs and table."),
    subsets: int = typer.Option(10, help="Random 500-track subsets per evaluation."),
) -> None:
    """Train and evaluate the paper's four rows (tags only, + tag-to-caption, + View
    Dropout, + TextSwap) with the same seeds and budget; write a table and a plot.
    A rerun skips finished runs and resumes an interrupted one."""
    from trainer.ablation import render, run_ablation
    _exit_on_sigterm()
    try:
        summary = run_ablation(config_file, overrides or [], list(eval_sets),
                               [int(s) for s in _names(seeds)], out,
                               subsets)
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(render(summary))
    typer.echo(f"ablation: {out / 'ablation.md'}, {out / 'ablation.png'}")


@app.command()
def card(
    dataset: str = typer.Option(..., help="Dataset name: the card goes to "
                                "data_cards/<dataset>/README.md."),
    catalog: Path = typer.Option(..., help="The source catalog."),
    views: Path = typer.Option(None, help="Views folder from `captions`."),
    curated: Path = typer.Option(None, help="Output folder of `curate`."),
    cards_dir: Path = typer.Option(Path("data_cards"), help="Where data cards live."),
    categories: str = typer.Option("genre,mood,instrument", help="Tag categories."),
) -> None:
    """Write the dataset card (Hugging Face format) with plots; later stages add to it."""
    from pipeline.card import write_card

    try:
        path = write_card(dataset, cards_dir, catalog, views, curated,
                          _names(categories))
    except (ValueError, OSError, KeyError) as err:
        _fail(f"cannot write the card: {err}")
    typer.echo(f"card: {path}")


if __name__ == "__main__":
    app()
