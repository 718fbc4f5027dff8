"""The listening test's record: a SQLite file of trials (one query, the two runs' result
lists, which run was shown on the left) and votes (left, right or same).

Runs are stored by label (run folder name, checkpoint and its sha256), so one file can
hold several comparisons; results are per pair of runs, each with its win rate among
the decisive votes and a 95% Wilson interval.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import threading
import time
from pathlib import Path

CHOICES = ("left", "right", "same")
Z95 = 1.959964

_TABLES = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY, created REAL NOT NULL, query TEXT NOT NULL,
    run_a TEXT NOT NULL, run_b TEXT NOT NULL,
    left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
    results_a TEXT NOT NULL, results_b TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    trial_id TEXT PRIMARY KEY REFERENCES trials(id), created REAL NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'same')));
"""


class VoteError(ValueError):
    """A vote that cannot be recorded; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def wilson(wins: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound for small n, unlike p ± 2 se)."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Votes:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one connection shared by the server's threads, serialised by a lock
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.executescript(_TABLES)
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path} is not a usable votes file ({err}); give another "
                             "with --votes") from err
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def new_trial(self, query: str, run_a: str, run_b: str, results_a: list[str],
                  results_b: list[str]) -> tuple[str, str]:
        """(trial id, the side shown on the left), the side drawn at random."""
        trial, left = secrets.token_urlsafe(12), "ab"[secrets.randbelow(2)]
        with self.lock, self.db:
            self.db.execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (trial, time.time(), query, run_a, run_b, left,
                             json.dumps(results_a), json.dumps(results_b)))
        return trial, left

    def trial(self, trial: str) -> dict:
        with self.lock:
            row = self.db.execute("SELECT query, run_a, run_b, left_side, results_a, results_b "
                                  "FROM trials WHERE id = ?", (trial,)).fetchone()
        if row is None:
            raise VoteError(f"no listening trial {trial!r}; start one from the listening page",
                            404)
        query, run_a, run_b, left, results_a, results_b = row
        sides = {"a": json.loads(results_a), "b": json.loads(results_b)}
        right = "b" if left == "a" else "a"
        return {"query": query, "runs": {"a": run_a, "b": run_b}, "left": left,
                "right": right, "results": {"left": sides[left], "right": sides[right]}}

    def vote(self, trial: str, choice: str) -> int:
        """Record a vote; returns how many votes the file holds."""
        if choice not in CHOICES:
            raise VoteError(f"choice {choice!r} must be one of {', '.join(CHOICES)}", 400)
        self.trial(trial)
        try:
            with self.lock, self.db:
                self.db.execute("INSERT INTO votes VALUES (?, ?, ?)",
                                (trial, time.time(), choice))
        except sqlite3.IntegrityError as err:
            raise VoteError("this trial already has a vote; start the next one", 409) from err
        return self.count()

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM votes").fetchone()[0]

    def voted_queries(self) -> set[str]:
        with self.lock:
            rows = self.db.execute("SELECT t.query FROM votes v JOIN trials t "
                                   "ON t.id = v.trial_id").fetchall()
        return {r[0] for r in rows}

    def results(self) -> list[dict]:
        """Per pair of runs (in name order): wins of each, ties, win rate of the first
        among decisive votes with its interval."""
        with self.lock:
            rows = self.db.execute("""
                SELECT t.run_a, t.run_b,
                       CASE WHEN v.choice = 'same' THEN 'same'
                            WHEN (v.choice = 'left') = (t.left_side = 'a') THEN 'a'
                            ELSE 'b' END AS winner
                FROM votes v JOIN trials t ON t.id = v.trial_id""").fetchall()
        pairs: dict[tuple[str, str], dict] = {}
        for run_a, run_b, winner in rows:
            first, second = sorted((run_a, run_b))
            entry = pairs.setdefault((first, second), {"first": first, "second": second,
                                                       "first_wins": 0, "second_wins": 0,
                                                       "same": 0})
            if winner == "same":
                entry["same"] += 1
            else:
                won = run_a if winner == "a" else run_b
                entry["first_wins" if won == first else "second_wins"] += 1
        out = []
        for entry in pairs.values():
            decisive = entry["first_wins"] + entry["second_wins"]
            low, high = wilson(entry["first_wins"], decisive)
            out.append({**entry, "votes": decisive + entry["same"], "decisive": decisive,
                        "first_win_rate": entry["first_wins"] / decisive if decisive else None,
                        "ci95": [low, high]})
        return sorted(out, key=lambda e: (e["first"], e["second"]))
