"""The `adswap` command: a thin Typer layer over each stage's config dataclass.

Every command takes `--config FILE.yaml`, `--set section.key=value` and one flag per
setting, all generated from its config (adswap/config_cli.py). Stages are imported
inside their command so `adswap --help` stays fast and a stage's heavy dependencies
(torch, vLLM) are only needed by the commands that use them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from adswap.config_cli import config_command, fail
from pipeline.captions.stage import CaptionsConfig
from pipeline.card import CardConfig
from pipeline.curate.stage import CurateConfig
from pipeline.demo_data import DemoConfig
from pipeline.eval_sets import ImportConfig
from pipeline.shards.stage import ShardsConfig
from pipeline.tag_queries import TagQueriesConfig
from pipeline.tags import TagsConfig
from pipeline.translate import TranslateConfig
from retrieval.config import EmbedIndexConfig, SearchConfig, ServeConfig
from schemas.catalog import ValidateConfig
from trainer.config import AblationConfig, EvalConfig, ExportConfig, TrainConfig

app = typer.Typer(
    name="adswap",
    help="Augment, Drop & Swap: train music-text retrieval models from a tagged catalog.\n\n"
    "Stages, in order: demo-data -> captions -> curate -> shards -> train -> eval -> card.\n\n"
    "Every command takes --config FILE.yaml, --set section.key=value and the flags in "
    "its --help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
CARD_DIR = typer.Option(None, help="Data card folder (data_cards/<dataset>) to add this "
                        "command's results to.")


@config_command(app, DemoConfig, "demo-data")
def demo_data(config: DemoConfig) -> None:
    """Render a demo catalog: MIDI arrangements that follow their tags, as FLAC audio.

    Writes catalog.parquet, audio/*.flac, reference_captions.parquet (test split) and
    demo.json into OUT. A rerun with the same settings resumes where it stopped.
    """
    from pipeline.demo_data import run

    stats = _run(run, config)
    typer.echo(f"demo-data: {stats.tracks} tracks ({stats.rendered} rendered, "
               f"{stats.skipped} already there), {stats.audio_seconds / 3600:.2f} h of audio, "
               f"splits {stats.splits}, {stats.seconds:.1f} s -> {config.out}")


@config_command(app, ValidateConfig)
def validate(config: ValidateConfig) -> None:
    """Check a catalog against the schema and list every problem, with file, row and field."""
    from schemas.catalog import read_catalog

    result = _run(read_catalog, config.catalog, config.read)
    for problem in result.rejects:
        typer.echo(f"rejected: {problem}")
    typer.echo(f"{config.catalog}: {len(result.tracks)} valid tracks, {len(result.rejects)} "
               "problems in rejected rows")
    if result.rejects:
        raise typer.Exit(1)


@config_command(app, TagsConfig)
def tags(config: TagsConfig) -> None:
    """Report a catalog's tag vocabulary and write a starter tag map to edit.

    The report: tags per category with counts, tracks per number of tags, rare tags,
    what the tag map changed and what it does not know, suspected duplicates.
    """
    from pipeline.tags import run

    report = _run(run, config)
    sizes = ", ".join(f"{c} {len(t)}" for c, t in report["categories"].items())
    typer.echo(f"tags: {report['tracks']} tracks; tags per category: {sizes}; "
               f"{len(report['unmapped'])} unmapped, {len(report['rare']['tags'])} rare, "
               f"{len(report['duplicates'])} suspected duplicate groups -> {config.out}/tags.md, "
               f"{config.out}/starter_map.yaml")


@config_command(app, CaptionsConfig)
def captions(config: CaptionsConfig) -> None:
    """Write caption views with an LLM (Augment + View Dropout), as resumable Parquet shards.

    A rerun finishes only what is missing; a changed prompt, model or sampling setting
    regenerates exactly the views it affects.
    """
    from pipeline.captions.stage import run

    stats = _run(run, config)
    typer.echo(f"captions: {stats.views_generated} views generated, {stats.views_reused} kept, "
               f"{stats.failures} failed (retried on the next run); flags "
               f"{dict(stats.flags)}; {stats.seconds:.1f} s -> {config.out}")
    if stats.failures:
        raise typer.Exit(1)


@config_command(app, CurateConfig)
def curate(config: CurateConfig, settings: Path | None = typer.Option(
        None, "--settings", hidden=True, help="Gone: see --config.")) -> None:
    """Filter views with DuckDB rules, assign leakage-free splits, build the TextSwap
    dictionary, and report what each rule removed and why."""
    from pipeline.curate.stage import run

    if settings is not None:  # the curation YAML of earlier versions
        fail(f"--settings is gone: {settings}'s rules: and splits: sections are curate's "
             f"own settings now, so pass it as --config {settings} (or set one value, "
             "e.g. --set rules.length.min_words=5)")

    stats = _run(run, config)
    removed = ", ".join(f"{rule} {n}" for rule, n in stats.by_rule.items() if n)
    typer.echo(f"curate: {stats.views} views, {stats.curated} curated, {stats.rejected} "
               f"rejected ({removed or 'none'}); {stats.seconds:.1f} s -> {config.out}/report.md")


@config_command(app, ShardsConfig)
def shards(config: ShardsConfig, card_dir: Path = CARD_DIR) -> None:
    """Pack audio clips and curated views into WebDataset tars with reproducible bytes.

    A rerun after a crash builds only the shards that are missing; a bad audio file is
    recorded in rejects.jsonl and never stops the stage.
    """
    from pipeline.card import update_card
    from pipeline.shards.stage import card_facts, run

    stats = _run(run, config)
    if not stats.complete:
        typer.echo(f"shards: built {stats.built} of this rank's shards ({stats.skipped} were "
                   "done); other ranks still have shards to build")
        return
    if card_dir is not None:
        _run(update_card, card_dir, "shards", card_facts(config.out))
    rejected = ", ".join(f"{k} {n}" for k, n in stats.rejects.items()) or "none"
    typer.echo(f"shards: {stats.samples} samples from {stats.tracks} tracks in {stats.shards} "
               f"shards ({stats.built} built, {stats.skipped} already done), "
               f"{stats.audio_hours:.2f} h, {stats.bytes / 1e6:.1f} MB; rejected: {rejected}; "
               f"{stats.seconds:.1f} s -> {config.out}/report.md")


@config_command(app, TrainConfig)
def train(config: TrainConfig, overrides: list[str], config_file: Path | None,
          resume: bool = typer.Option(False, help="Continue the run in run.out from its "
                                      "last checkpoint: with its saved config (plus any "
                                      "--set and flags), or with --config's, which must "
                                      "then match it."),
          accept_config_changes: bool = typer.Option(
              False, help="With --resume: continue the run even where the settings "
                          "differ from those it was started with (the differences are "
                          "listed without this flag, and the run refused)."),
          card_dir: Path = CARD_DIR) -> None:
    """Train the DuET-MC dual encoder with view sampling, View Dropout and TextSwap.

    The defaults are the CPU demo. One process here; for many GPUs start it with
    torchrun (`make train NPROC=8`).
    """
    from trainer.config import load_config
    from trainer.train import train as run_training

    _exit_on_sigterm()
    if resume and config_file is None:
        saved = config.run.out / "config.yaml"
        if not saved.exists():
            fail(f"nothing to resume: {saved} does not exist")
        config = _run(load_config, saved, overrides)
    state = _run(run_training, config, resume=resume,
                 accept_config_changes=accept_config_changes)
    if card_dir is not None and int(os.environ.get("RANK", 0)) == 0:
        from pipeline.card import update_card
        from trainer.run_folder import card_facts

        _run(update_card, card_dir, "training", card_facts(config, state),
             key=str(config.run.out))
    typer.echo(f"train: {state.epoch} epochs, {state.step} steps"
               + (f" ({state.stopped})" if state.stopped else "")
               + f"; best validation loss {state.best_valid_loss:.4f} -> {config.run.out}")


@config_command(app, TrainConfig, "features")
def features(config: TrainConfig) -> None:
    """Compute the frozen towers' outputs on the train shards once, into --features DIR:
    the text encoder's token states of every caption view, tags text and cached
    TextSwap text; a frozen audio model's (hf-frozen) pooled layer states of
    features.audio_crops crops per clip. Then train with the same config and --features
    DIR to read them instead of running the towers. Takes the training config;
    resumable; refuses a cache over features.budget_gb."""
    from trainer.features import build_features

    _exit_on_sigterm()
    built = _run(build_features, config, log=typer.echo)
    for stats in built.values():
        items = "texts" if stats.tower == "text" else "clips"
        typer.echo(f"features: {stats.tower}: {stats.units} shards ({stats.units_done_before}"
                   f" already done), {stats.items:,} {items}, {stats.estimated_gb:.2f} GB, "
                   f"{stats.seconds:.1f} s -> {stats.folder}")


def _exit_on_sigterm() -> None:
    """SIGTERM (kill, SLURM preemption) unwinds like Ctrl-C, so the loader's worker
    processes are shut down instead of outliving the run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@config_command(app, ImportConfig, "import-eval")
def import_eval(config: ImportConfig) -> None:
    """Turn an evaluation set (audio + human captions) into eval shards, with the shards
    stage's audio handling. Bad rows and bad audio are reported, never fatal; a rerun
    after a crash builds only the shards that are missing."""
    from pipeline.eval_sets import run

    stats = _run(run, config)
    rejected = ", ".join(f"{k} {n}" for k, n in stats.rejects.items()) or "none"
    typer.echo(f"import-eval: {stats.tracks} tracks, {stats.captions} captions, "
               f"{stats.samples} clips from {stats.rows} rows ({stats.built} shards built, "
               f"{stats.skipped} already done); rejected: {rejected} -> {config.out}")


@config_command(app, TagQueriesConfig, "tag-queries")
def tag_queries(config: TagQueriesConfig) -> None:
    """Each track's own tag list (the text a p_cap 0 run trains on) as its query, for
    `adswap import-eval`: scored on held-out tracks, what the audio side has learned,
    free of caption paraphrase."""
    from pipeline.tag_queries import run

    stats = _run(run, config)
    typer.echo(f"tag-queries: {stats.queries} {config.split} tracks ({stats.invalid_rows} "
               f"invalid catalog rows left out) -> {config.out}")


@config_command(app, TranslateConfig, "translate-captions")
def translate_captions(config: TranslateConfig) -> None:
    """Translate eval captions with the caption stage's LLM engine (run it in .venv-llm),
    for multilingual evaluation: import the result with `adswap import-eval`."""
    from pipeline.translate import run

    stats = _run(run, config)
    failed = ", ".join(f"{k} {n}" for k, n in stats.failed.items()) or "none"
    typer.echo(f"translate-captions: {stats.source_rows} captions, {stats.translated} "
               f"translations, failed: {failed} -> {config.out}")


@config_command(app, EvalConfig, "eval")
def evaluate(config: EvalConfig, card_dir: Path = CARD_DIR) -> None:
    """Text-to-music and music-to-text retrieval: R@1/5/10 and median rank on random
    500-track subsets, per set and caption language. Writes RUN/eval/report.{json,md}
    and plots. Other runs to compare with add RUN minus each of them, with 95%
    paired-bootstrap intervals."""
    from trainer.evaluate import evaluate as run_eval

    report = _run(run_eval, config)
    if card_dir is not None:
        from pipeline.card import update_card
        from trainer.evaluate import card_facts

        _run(update_card, card_dir, "evaluation", card_facts(report), key=report["run"])
    for name, entry in report["sets"].items():
        for language, m in entry["languages"].items():
            typer.echo(f"eval {name} ({language}): text->music R@10 "
                       f"{m['t2m_R@10']['mean']:.1f} ± {m['t2m_R@10']['std']:.1f}, "
                       f"MR {m['t2m_MR']['mean']:.1f}; music->text R@10 "
                       f"{m['m2t_R@10']['mean']:.1f}")
    from trainer.bootstrap import describe

    for other, sets in report.get("comparisons", {}).items():
        for name, by_language in sets.items():
            for language, paired in by_language.items():
                typer.echo(f"vs {other} on {name} ({language}), 95% interval: " + ", ".join(
                    f"{m} {describe(paired[m])}" for m in ("R@1", "R@10", "MR")))
    typer.echo(f"report: {config.run / 'eval' / 'report.md'}")


@config_command(app, AblationConfig)
def ablation(config: AblationConfig) -> None:
    """Train and evaluate the paper's four rows (tags only, + tag-to-caption, + View
    Dropout, + TextSwap), and the optional p_cap and other-shards sweeps, with the same
    seeds and budget; write a table of each step's difference with a 95% paired-bootstrap
    interval, and a plot. A rerun skips finished runs and resumes an interrupted one."""
    from trainer.ablation import render, report_stem, run_ablation

    _exit_on_sigterm()
    summaries = _run(run_ablation, config)
    typer.echo(render(summaries[0]))
    for i, summary in enumerate(summaries):
        stem = config.out / report_stem(i, summary)
        typer.echo(f"ablation on {summary['set_name']}: {stem}.md, {stem}.png")


@config_command(app, CardConfig)
def card(config: CardConfig) -> None:
    """Write the dataset card (Hugging Face format) with plots; later stages add to it."""
    from pipeline.card import write_card

    typer.echo(f"card: {_run(write_card, config)}")


def _run(fn, *args, **kwargs):
    """A stage's expected failures (bad input, a missing file, an engine that cannot
    start) end the command with their message, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError, RuntimeError, LookupError) as err:
        fail(str(err))


@config_command(app, EmbedIndexConfig)
def embed(config: EmbedIndexConfig) -> None:
    """Embed every track (its clips and the pooled track embedding, l2-normalised) into a
    Parquet folder with a manifest: the INDEX that `search` and `serve` read. Resumable:
    a rerun continues a killed one."""
    from retrieval.ann import build_for
    from retrieval.embed import embed as run_embed

    _exit_on_sigterm()
    stats = _run(run_embed, config.embed)
    out = config.embed.out
    typer.echo(f"embed: {stats.tracks} tracks, {stats.clips} clips, {stats.rejected} rejected "
               f"({out}/rejects), {stats.parts} parts ({stats.parts_done_before} already done); "
               f"{stats.seconds:.1f} s ({stats.load_seconds:.1f} s loading the model) -> {out}")
    if config.index:
        info = _run(build_for, out, config.ann, config.embed.device)
        measured = ", ".join(f"{info['recall_by_query'][q]:.3f} on {n} {q} queries"
                             for q, n in info["recall_queries"].items())
        typer.echo(f"index: FAISS IVF-Flat, {info['nlist']} lists, nprobe {info['nprobe']}: "
                   f"recall@{info['k']} against exact search {measured}; built in "
                   f"{info['build_seconds']} s -> {out}/ann")


@config_command(app, SearchConfig)
def search(config: SearchConfig,
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a "
                                        "table.")) -> None:
    """Rank the index's tracks for a text query, an audio example (--audio) or one of its
    tracks (--like)."""
    import json

    from retrieval.search import search as run_search

    result = _run(run_search, config)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    for hit in result["results"]:
        typer.echo(f"{hit['rank']:>3}  {hit['score']:+.3f}  {hit['track_id']:<24} "
                   f"{hit['tags_text'] or ''}  {hit['audio_path'] or '(no audio)'}")
    if not result["results"]:
        typer.echo("no results")


@config_command(app, ServeConfig)
def serve(config: ServeConfig) -> None:
    """A local web page to search the index and hear the results; with --compare, a
    blind listening test between two runs, with win rates and confidence intervals."""
    from retrieval.serve.app import serve as run_server

    _run(run_server, config, announce=typer.echo)


@config_command(app, ExportConfig)
def export(config: ExportConfig) -> None:
    """Write a self-contained model folder: trainable weights (safetensors), a config
    naming the frozen encoders, a model card; load it with `adswap.load_model(DIR)`."""
    from trainer.export import export as run_export

    folder = _run(run_export, config)
    typer.echo(f"export: {folder} (model.safetensors, config.json, README.md); load it with "
               f"`from adswap import load_model; load_model('{folder}')`")


if __name__ == "__main__":
    app()
