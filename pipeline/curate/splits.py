"""Leakage-free splits: a track's split comes from hashing its artist (or its id when
the artist is unknown), so all of an artist's tracks land in one split. A split given
in the catalog wins."""

from __future__ import annotations

import hashlib

from schemas.catalog import Track


def assign_split(track: Track, valid_fraction: float, test_fraction: float,
                 seed: int = 0) -> str:
    if track.split:
        return track.split
    group = f"artist:{track.artist.strip().lower()}" if track.artist else f"track:{track.track_id}"
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < test_fraction:
        return "test"
    if point < test_fraction + valid_fraction:
        return "valid"
    return "train"
