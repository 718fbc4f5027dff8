"""Inputs several benches share, made once in a work folder and reused between runs."""

from __future__ import annotations

from pathlib import Path


def demo_folder(work: Path, tracks: int, test_tracks: int,
                duration_s: tuple[float, ...]) -> Path:
    """The demo catalog and its audio (`adswap demo-data`, seed 0), rendered if needed."""
    from pipeline.demo_data import DemoConfig
    from pipeline.demo_data import run as render

    shortest, longest = duration_s
    folder = work / f"demo-{tracks}-{test_tracks}-{shortest:g}-{longest:g}s"
    render(DemoConfig(out=folder, tracks=tracks, test_tracks=test_tracks, seed=0, workers=0,
                      min_duration_s=shortest, max_duration_s=longest))
    return folder


def curated_demo(work: Path, tracks: int, test_tracks: int,
                 duration_s: tuple[float, ...]) -> Path:
    """`demo_folder`, captioned by the template engine and curated into its curated/."""
    from pipeline.captions.engines import EngineConfig
    from pipeline.captions.stage import CaptionsConfig
    from pipeline.captions.stage import run as captions
    from pipeline.curate.stage import CurateConfig
    from pipeline.curate.stage import run as curate

    folder = demo_folder(work, tracks, test_tracks, duration_s)
    if not (folder / "curated" / "report.json").exists():
        captions(CaptionsConfig(catalog=folder / "catalog.parquet", out=folder / "views",
                                engine=EngineConfig(engine="template")))
        curate(CurateConfig(views=folder / "views", catalog=folder / "catalog.parquet",
                            out=folder / "curated"))
    return folder


def check_demo(tracks: int, test_tracks: int, duration_s: tuple[float, ...]) -> list[str]:
    """The demo settings' problems, for a bench's Settings.check."""
    problems = []
    if tracks < 1 or test_tracks < 0:
        problems.append("tracks must be >= 1 and test_tracks >= 0")
    if len(duration_s) != 2 or not 1 <= duration_s[0] <= duration_s[1]:
        problems.append("duration_s must be the shortest and longest track, 1 <= a <= b")
    return problems
