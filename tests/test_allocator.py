"""The caching-allocator model on hand-derived event sequences.

Each expected figure is derived in a comment from the rules of PyTorch's
``c10/cuda/CUDACachingAllocator.cpp`` (read at pytorch/pytorch 001074d25084): ``round_size``
512 B rounding; ``get_pool``: small pool <= ``kSmallSize`` 1 MiB; ``get_allocation_size``:
2 MiB segments for small requests, 20 MiB (``kLargeBuffer``) below ``kMinLargeAlloc`` 10 MiB,
larger ones rounded up to ``kRoundLarge`` 2 MiB; ``should_split``: remainder >= 512 B (small) or
> 1 MiB (large); ``get_free_block``: best fit (``lower_bound`` on size); ``free_block``: merge
with free neighbours; ``malloc``: on a failed ``cudaMalloc``, ``release_cached_blocks`` frees
only segments that are one free block, then one retry.
"""

from lora_budget.trace.allocator import CachingAllocator, replay, round_size, segment_size

KiB = 1024
MiB = 1024 * KiB


def test_rounding_and_segment_sizes():
    assert round_size(1) == 512  # below kMinBlockSize: one 512 B block
    assert round_size(513) == 1024  # next multiple of 512
    assert segment_size(1 * MiB) == 2 * MiB  # 1 MiB is still "small" (<= kSmallSize)
    assert segment_size(1 * MiB + 512) == 20 * MiB  # large and < 10 MiB: kLargeBuffer
    assert segment_size(10 * MiB) == 10 * MiB  # >= kMinLargeAlloc: rounded to 2 MiB, already is
    assert segment_size(10 * MiB + 512) == 12 * MiB


def test_three_600_kib_requests_share_one_small_segment():
    # 600 KiB = 614400 B <= 1 MiB: small pool. The first opens a 2 MiB segment and splits
    # (remainder 1482752 >= 512); the second and third split the remainder (868352, then 253952).
    r = replay([600 * KiB] * 3, [0, 1, 2])
    assert r.peak_reserved == 2 * MiB
    assert r.segments == 1
    assert r.peak_allocated == 3 * 600 * KiB


def test_12_mib_request_gets_a_12_mib_segment():
    # >= 10 MiB: segment rounded up to 2 MiB = 12 MiB, nothing left to split.
    r = replay([12 * MiB], [0])
    assert (r.peak_reserved, r.peak_allocated, r.fragmentation) == (12 * MiB, 12 * MiB, 0)


def test_unsplit_remainder_counts_as_allocated():
    # 11 MiB + 1 B rounds to 11 MiB + 512; its segment is 12 MiB; the remainder 1 MiB - 512 is
    # not > 1 MiB, so the whole 12 MiB block is handed out and memory_allocated counts 12 MiB.
    r = replay([11 * MiB + 1], [0])
    assert (r.peak_reserved, r.peak_allocated, r.peak_requested) == (12 * MiB, 12 * MiB, 11 * MiB + 512)


def test_5_mib_requests_split_a_20_mib_segment():
    # 5 MiB < 10 MiB: a 20 MiB segment, split (15 MiB left > 1 MiB); the second 5 MiB splits the
    # 15 MiB block (10 left); 8 MiB splits the 10 MiB block (2 MiB left > 1 MiB, split): one
    # segment. 3 MiB finds only the 2 MiB block: a second 20 MiB segment.
    sizes = [5 * MiB, 5 * MiB, 8 * MiB, 3 * MiB]
    r = replay(sizes[:3], [0, 1, 2])
    assert (r.peak_reserved, r.segments, r.peak_allocated) == (20 * MiB, 1, 18 * MiB)
    r = replay(sizes, [0, 1, 2, 3])
    assert (r.peak_reserved, r.segments, r.peak_allocated) == (40 * MiB, 2, 21 * MiB)


def test_best_fit_takes_the_smallest_block_that_fits():
    # One 20 MiB segment: A 5 MiB @0, B 5 MiB @5, C 8 MiB @10, tail 2 MiB @18 (free).
    # Free A: free blocks are 5 MiB and 2 MiB. 1.5 MiB best-fits the 2 MiB tail (remainder
    # 0.5 MiB not > 1 MiB: unsplit, 2 MiB allocated); 5 MiB then reuses A. Still one segment:
    # allocated at the end 5 + 5 + 8 + 2 = 20 MiB, of which 19.5 MiB were requested. (First fit
    # would have split A and needed a second segment for the last 5 MiB.)
    sizes = [5 * MiB, 5 * MiB, 8 * MiB, 3 * MiB // 2, 5 * MiB]
    r = replay(sizes, [0, 1, 2, ~0, 3, 4])
    assert (r.peak_reserved, r.segments, r.peak_allocated) == (20 * MiB, 1, 20 * MiB)
    assert r.peak_requested == 39 * MiB // 2


def test_fragmented_free_blocks_cannot_serve_a_larger_request():
    # A, B, C 5 MiB each split a 20 MiB segment; D 5 MiB takes the 5 MiB remainder whole.
    # Free A and C: 10 MiB free, in two 5 MiB blocks that are not neighbours. 8 MiB fits neither:
    # a second 20 MiB segment. Reserved 40 MiB with 5 + 5 + 8 = 18 MiB allocated: 22 MiB cached.
    sizes = [5 * MiB] * 4 + [8 * MiB]
    r = replay(sizes, [0, 1, 2, 3, ~0, ~2, 4])
    assert (r.peak_reserved, r.allocated_at_reserved_peak, r.fragmentation) == (40 * MiB, 18 * MiB, 22 * MiB)
    assert r.peak_allocated == 20 * MiB  # before the frees: A-D


def test_freed_neighbours_merge():
    # As above, then free B too: A, B, C merge into one 15 MiB block, which serves 15 MiB
    # without a new segment (reserved stays 20 MiB).
    sizes = [5 * MiB] * 4 + [15 * MiB]
    r = replay(sizes, [0, 1, 2, 3, ~0, ~2, ~1, 4])
    assert (r.peak_reserved, r.segments) == (20 * MiB, 1)


def test_pools_are_separate():
    # A free 2 MiB small segment cannot serve a 1.5 MiB (large) request: a 20 MiB segment.
    r = replay([600 * KiB, 3 * MiB // 2], [0, ~0, 1])
    assert r.peak_reserved == 22 * MiB


def test_failed_cuda_malloc_releases_free_segments_and_retries():
    # Capacity 40 MiB. 12 MiB (segment 12 MiB), freed: the segment stays cached. 30 MiB needs a
    # 30 MiB segment: 12 + 30 > 40, so the free 12 MiB segment is released and the call retried.
    # Reserved peaks at 30 MiB; one retry, no OOM.
    r = replay([12 * MiB, 30 * MiB], [0, ~0, 1], capacity=40 * MiB)
    assert (r.peak_reserved, r.alloc_retries, r.ooms) == (30 * MiB, 1, 0)
    # Without the capacity the cached segment stays: 42 MiB reserved.
    assert replay([12 * MiB, 30 * MiB], [0, ~0, 1]).peak_reserved == 42 * MiB


def test_small_block_splits_down_to_512_bytes():
    # 2 MiB - 512 B... the small pool splits whenever 512 B or more remain: a 1 MiB request and a
    # 1 MiB - 512 B request leave 512 B, which is split off; a 512 B request then fits it.
    alloc = CachingAllocator()
    for n in (1 * MiB, 1 * MiB - 512, 512):
        alloc.malloc(n)
    r = alloc.result()
    assert (r.peak_reserved, r.segments, r.peak_allocated) == (2 * MiB, 1, 2 * MiB)


def test_tiny_model_replay_peaks_where_the_trace_does():
    # The replay sees the same allocations and frees as the tracker, so its peak of requested
    # bytes is the tracker's (the engine raises otherwise); block sizes and segments only add.
    from lora_budget.spec import TrainSpec
    from lora_budget.trace.engine import trace
    from tests.tiny_models import tiny_ref

    for method in ("lora", "qlora", "full"):
        result = trace(TrainSpec(model=tiny_ref("llama"), method=method, batch_size=2, seq_len=16, rank=4))
        assert result.reserved is not None
        assert result.reserved.peak_requested == result.peak_bytes
        assert result.reserved.peak_allocated >= result.peak_bytes
        # every request of this width-64 model is <= 1 MiB: the small pool, 2 MiB segments
        assert result.reserved.peak_reserved % (2 * MiB) == 0
        assert result.reserved.peak_reserved >= result.peak_bytes


def test_large_remainder_just_over_1_mib_is_split_and_reused():
    # 11 MiB - 512 is a multiple of 512 and >= 10 MiB: a 12 MiB segment; the remainder 1 MiB + 512
    # is > kSmallSize, so it is split off (should_split). A 1 MiB + 512 request is large-pool and
    # fits it exactly: still one segment, 12 MiB allocated, nothing cached.
    r = replay([11 * MiB - 512, 1 * MiB + 512], [0, 1])
    assert (r.peak_reserved, r.segments, r.peak_allocated, r.fragmentation) == (12 * MiB, 1, 12 * MiB, 0)
    # had it not been split, the second request would have needed a 20 MiB segment of its own
    assert replay([11 * MiB - 512], [0]).peak_allocated == 11 * MiB - 512


def test_release_on_failure_keeps_partly_used_segments():
    # Capacity 40 MiB. A 5 MiB splits a 20 MiB segment (15 MiB left); B 16 MiB does not fit the
    # 15 MiB block and gets a 16 MiB segment, then is freed. 24 MiB fits no block and needs a
    # 24 MiB segment: 36 + 24 > 40, so release_cached_blocks frees B's segment (one free block)
    # but not A's (split, A in use): 20 + 24 = 44 > 40 still, an OOM (the model counts it and
    # serves the request, so reserved reads 44 MiB).
    r = replay([5 * MiB, 16 * MiB, 24 * MiB], [0, 1, ~1, 2], capacity=40 * MiB)
    assert (r.alloc_retries, r.ooms, r.segments, r.peak_reserved) == (1, 1, 3, 44 * MiB)


def test_a_free_large_segment_does_not_serve_a_small_request():
    # 5 MiB opens a 20 MiB large segment and is freed: the segment is one 20 MiB free block in the
    # large pool. A 4 KiB request is small (<= 1 MiB): get_pool picks the small pool, which is
    # empty, so a 2 MiB segment is made: 22 MiB reserved for 4 KiB allocated.
    r = replay([5 * MiB, 4 * KiB], [0, ~0, 1])
    assert (r.peak_reserved, r.segments, r.allocated_at_reserved_peak) == (22 * MiB, 2, 4 * KiB)
