"""Settings of the commands that use a trained model (`adswap embed`, `search`, `serve`),
kept apart from the modules that do the work so the CLI reads them without importing
torch, FAISS or FastAPI."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from schemas.catalog import SPLITS, CatalogConfig, read_setting
from schemas.config import Config, setting
from schemas.embeddings import DTYPES


@dataclass(frozen=True)
class IndexConfig(Config):
    nlist: int = setting(0, help="k-means lists of the approximate index; 0 = about "
                         "sqrt(tracks), at most tracks / 39.")
    target_recall: float = setting(0.95, help="recall@k against exact search the chosen "
                                   "nprobe must reach.")
    k: int = setting(10, help="k of the recall measured.")
    queries: int = setting(1000, help="Sample queries for the recall.")
    seed: int = setting(0, help="Seed of k-means and the query sample.")
    threads: int = setting(0, help="FAISS threads; 0 = all cores.")

    def check(self) -> list[str]:
        problems = [] if self.nlist >= 0 else ["nlist must be >= 0"]
        if not 0 < self.target_recall <= 1:
            problems.append("target_recall must be in (0, 1]")
        if self.k < 1 or self.queries < 1 or self.threads < 0:
            problems.append("k and queries must be >= 1, threads >= 0")
        return problems


@dataclass(frozen=True)
class EmbedConfig(Config):
    run: Path = setting(help="A run folder from `adswap train`.", argument=True)
    out: Path = setting(help="Folder for the embeddings (Parquet + manifest): the INDEX "
                        "that `search` and `serve` read.")
    shards: Path | None = setting(None, help="Shards folder (`adswap shards` or "
                                  "`import-eval`) whose clips to embed.")
    catalog: Path | None = setting(None, help="Catalog: with shards, only each track's "
                                   "audio path (for playback); alone, its audio files are "
                                   "decoded and embedded.")
    read: CatalogConfig = read_setting()
    splits: tuple[str, ...] = setting((), help="Splits to embed, e.g. test; empty = every "
                                      "split.")
    checkpoint: str = setting("best", choices=("best", "last"), help="Which checkpoint of "
                              "the run.")
    dtype: str = setting("float16", choices=DTYPES, help="Stored precision: float16 (half "
                         "the disk) or float32.")
    batch_size: int = setting(32, help="Windows per model call.")
    part_tracks: int = setting(1000, help="Tracks per output part when reading a catalog "
                               "(the unit of resume).")
    max_clips: int = setting(8, help="Windows per catalog track, spread evenly over it; 0 = "
                             "every window.")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="Where to embed.")
    overwrite: bool = setting(False, help="Replace embeddings in out made with other "
                              "settings or another model.")

    def check(self) -> list[str]:
        problems = []
        if self.shards is None and self.catalog is None:
            problems.append("shards, catalog: give --shards, --catalog, or both")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown:
            problems.append(f"splits {unknown} must be among {', '.join(SPLITS)}")
        if self.batch_size < 1 or self.part_tracks < 1 or self.max_clips < 0:
            problems.append("batch_size and part_tracks must be >= 1, max_clips >= 0")
        return problems


@dataclass(frozen=True)
class EmbedIndexConfig(Config):
    """`adswap embed`: the embeddings, and with `index` the approximate index over them."""

    embed: EmbedConfig = setting(help="The embeddings.")
    index: bool = setting(False, help="Also build the approximate index (FAISS IVF) and "
                          "report its recall@10 against exact search.")
    ann: IndexConfig = setting(factory=IndexConfig, help="The approximate index.")


@dataclass(frozen=True)
class SearchConfig(Config):
    index: Path = setting(help="An embeddings folder from `adswap embed`.", argument=True)
    query: str = setting("", help="Text describing the music.", argument=True)
    audio: Path | None = setting(None, help="An audio file: find tracks that sound like it "
                                 "(query by example).")
    like: str = setting("", help="A track id of the index: find tracks like it.")
    k: int = setting(10, short="k", help="How many results.")
    approximate: bool = setting(False, help="Use the approximate index (`adswap embed "
                                "--index`) instead of exact search.")
    model: Path | None = setting(None, help="The run or export folder to encode queries with "
                                 "(default: the index's run).")
    max_query_chars: int = setting(1000, help="Longest text query.")

    def check(self) -> list[str]:
        problems = []
        given = sum([bool(self.query.strip()), self.audio is not None, bool(self.like)])
        if given == 0:
            problems.append("query: the query is empty: give text, --audio FILE or "
                            "--like TRACK")
        elif given > 1:
            problems.append("query: give only one of a text query, --audio FILE or "
                            "--like TRACK")
        if not 1 <= self.k <= 1000:
            problems.append(f"k is {self.k}; ask for 1 to 1000 results")
        if self.max_query_chars < 1:
            problems.append("max_query_chars must be >= 1")
        return problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig(Config):
    index: Path = setting(help="An embeddings folder from `adswap embed`.", argument=True)
    compare: Path | None = setting(None, help="A second run's embeddings of the same "
                                   "catalog: adds the blind A/B listening test.")
    host: str = setting("127.0.0.1", help="Address to listen on.")
    port: int = setting(8000, help="Port (0 = any free port).")
    allow_network: bool = setting(False, help="Allow a non-loopback host: anyone who "
                                  "reaches it can search, play the catalog's audio and "
                                  "vote.")
    votes: Path | None = setting(None, help="SQLite file for listening-test votes (default "
                                 "INDEX/votes.sqlite).")
    queries: Path | None = setting(None, help="Text file of listening-test queries, one a "
                                   "line (default: tags of random tracks).")
    k: int = setting(10, short="k", help="Results on the search page.")
    listen_k: int = setting(5, help="Results per run in the A/B test.")
    approximate: bool = setting(False, help="Search with the approximate index (`adswap "
                                "embed --index`).")
    max_query_chars: int = setting(1000, help="Longest text query.")
    max_upload_mb: float = setting(20.0, help="Largest audio upload, in MB.")

    def check(self) -> list[str]:
        problems = []
        if not self.allow_network and not is_loopback(self.host):
            problems.append(f"host {self.host} is not a loopback address: the page would "
                            "be open to the network. Pass --allow-network to mean it")
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} must be in [0, 65535]")
        if not 1 <= self.k <= 100 or not 1 <= self.listen_k <= 20:
            problems.append("k must be in [1, 100] and listen_k in [1, 20]")
        if self.max_query_chars < 1 or self.max_upload_mb <= 0:
            problems.append("max_query_chars and max_upload_mb must be positive")
        if self.queries is not None and not Path(self.queries).is_file():
            problems.append(f"queries file {self.queries} does not exist")
        return problems

    @property
    def votes_file(self) -> Path:
        return Path(self.votes) if self.votes is not None else Path(self.index) / "votes.sqlite"
