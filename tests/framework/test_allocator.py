"""keep_freed_memory: glibc keeps freed blocks, so reallocating a freed buffer faults no pages."""

import resource
import sys

import pytest

from hylab.allocator import keep_freed_memory


def faults_reallocating(size: int, times: int) -> int:
    import torch

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        buffer = torch.empty(size, dtype=torch.uint8)
        buffer.fill_(1)  # touch every page
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_freed_buffer_is_reused_without_page_faults():
    size, times = 8 * 1024 * 1024, 20  # 8 MiB: above glibc's default mmap threshold
    pages = size // 4096
    assert keep_freed_memory()
    faults_reallocating(size, 2)  # the heap grows once
    faults = faults_reallocating(size, times)
    # without the setting each round maps and faults the buffer anew: about pages * times faults
    assert faults < pages * times / 4
