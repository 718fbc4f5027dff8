import resource
import sys

import pytest

from pipeline.captions.memory import peak_resident_mb, release_free_memory


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_returns_freed_heap_pages():
    # 100 kB blocks sit below glibc's mmap threshold, so they come from the heap; keeping
    # every 20th alive pins the heap's top, as the engine's live buffers do, and the
    # freed 95% stays resident until trimmed
    blocks = [b"\x01" * 100_000 for _ in range(3000)]
    kept = blocks[::20]
    del blocks
    before = _resident_mb()
    assert release_free_memory()
    after = _resident_mb()
    assert before - after > 150, (before, after)
    # the kernel's high-water mark lags its per-thread RSS counters by a few pages
    assert peak_resident_mb() >= before - 4
    del kept
