"""The `adswap` command: a thin Typer layer over each stage's typed config.

Stages are imported inside their command so `adswap --help` stays fast and a stage's
heavy dependencies (torch, vLLM) are only needed by the commands that use them.
"""

from __future__ import annotations

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


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _not_built(stage: str, issue: int) -> NoReturn:
    _fail(f"`adswap {stage}` is not built yet (tracked in issue {issue}); nothing was run.",
          code=2)


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
        config = CatalogConfig(categories=tuple(c.strip() for c in categories.split(",")
                                                if c.strip()), audio_root=audio_root)
        result = read_catalog(catalog, config)
    except (ValueError, OSError) as err:  # SchemaError is a ValueError
        _fail(str(err))
    for problem in result.rejects:
        typer.echo(f"rejected: {problem}")
    typer.echo(f"{catalog}: {len(result.tracks)} valid tracks, {len(result.rejects)} "
               "problems in rejected rows")
    if result.rejects:
        raise typer.Exit(1)


@app.command()
def captions() -> None:
    """Write caption views with an LLM (Augment + View Dropout)."""
    _not_built("captions", 3)


@app.command()
def curate() -> None:
    """Filter views with DuckDB rules and build the TextSwap dictionary."""
    _not_built("curate", 4)


@app.command()
def shards() -> None:
    """Pack audio clips and curated views into WebDataset tars."""
    _not_built("shards", 5)


@app.command()
def train() -> None:
    """Train the DuET-MC dual encoder with View Dropout and TextSwap."""
    _not_built("train", 6)


@app.command("eval")
def evaluate() -> None:
    """Text-to-music retrieval: R@1/5/10 and median rank."""
    _not_built("eval", 7)


@app.command()
def card() -> None:
    """Write the dataset card under data_cards/."""
    _not_built("card", 4)
