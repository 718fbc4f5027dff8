import sys
import time

import pytest

from pipeline.captions.memory import peak_resident_mb, release_free_memory, resident_mb, trimmed

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")


def _fragmented_heap() -> list[bytes]:
    """Allocate ~300 MB in 100 kB blocks (below glibc's mmap threshold, so from the heap)
    and free all but every 20th: the survivors pin the heap's top, as the engine's live
    buffers do, so the freed 95% stays resident until trimmed."""
    blocks = [b"\x01" * 100_000 for _ in range(3000)]
    return blocks[::20]


@glibc
def test_release_free_memory_returns_freed_heap_pages():
    kept = _fragmented_heap()
    before = resident_mb()
    assert release_free_memory()
    after = resident_mb()
    assert before - after > 150, (before, after)
    # the kernel's high-water mark lags its per-thread RSS counters by a few pages
    assert peak_resident_mb() >= before - 4
    del kept


@glibc
def test_trimmed_hands_freed_pages_back_while_the_block_runs():
    kept = _fragmented_heap()  # 272 MB freed inside the heap, still resident
    with trimmed(headroom_mb=50, every_s=0.02):
        entry = resident_mb()
        # 143 MB more (mmapped, outside the heap) pass the headroom; the block neither
        # trims nor ends, so only the watcher can hand the freed heap pages back
        grown = b"\x01" * 150_000_000
        deadline = time.monotonic() + 10
        while resident_mb() > entry - 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert resident_mb() < entry - 50, (entry, resident_mb())
    del kept, grown
