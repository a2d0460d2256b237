"""Replay a trace's allocations and frees through a model of PyTorch's CUDA caching allocator.

``torch.cuda.max_memory_reserved`` counts the segments the caching allocator took from the
driver (``cudaMalloc``), not the blocks handed to tensors. The rules below are those of
``c10/cuda/CUDACachingAllocator.cpp``, checked line by line against pytorch/pytorch at commit
001074d25084fdb87a799823e395a50f5ec044d3 (the constants ``kMinBlockSize`` ... ``kRoundLarge``,
``round_size``, ``get_allocation_size``, ``get_free_block``, ``should_split``,
``alloc_found_block``, ``free_block``/``try_merge_blocks``, ``malloc``'s retry chain and
``release_cached_blocks``), with the default ``PYTORCH_CUDA_ALLOC_CONF``: ``max_split_size``
unlimited (so ``get_free_block``'s oversize checks and ``release_available_cached_blocks`` never
act), ``roundup_power2_divisions`` off (``round_size`` is plain 512 B rounding) and
``expandable_segments`` off (``should_split`` then uses the 1 MiB large-pool rule):

- ``round_size``: every request rounds up to a multiple of ``kMinBlockSize`` = 512 B;
- pools: requests <= ``kSmallSize`` = 1 MiB come from the small pool, larger from the large;
- ``get_allocation_size`` (a new segment, when no cached block fits): small requests get a
  ``kSmallBuffer`` = 2 MiB segment; requests < ``kMinLargeAlloc`` = 10 MiB get a
  ``kLargeBuffer`` = 20 MiB segment; larger ones a segment rounded up to ``kRoundLarge`` = 2 MiB;
- ``get_free_block``: best fit, the smallest cached free block >= the request in the request's
  pool (ties broken by address);
- ``should_split``: the block is split when the remainder is >= 512 B (small pool) or
  > 1 MiB (large pool); otherwise the whole block is handed out (and counted as allocated:
  ``memory_allocated`` counts block sizes);
- ``free_block``: the block returns to its pool and merges with free neighbours of its segment;
- segments are returned to the driver only when a ``cudaMalloc`` fails (``capacity`` here):
  then every fully free segment is released and the allocation retried (``alloc_retries``);
  ``malloc`` counts ``block->size`` in ``allocated_bytes`` and the unrounded request in
  ``requested_bytes`` (``peak_requested`` here is the rounded one, what the tracker counts).

Not modelled: streams (the trace runs one), CUDA graphs' private pools, ``expandable_segments``,
and the real addresses of segments (ties in best fit go to the segment created first).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from lora_budget.records import dataclass

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_BUFFER = 2 << 20
LARGE_BUFFER = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(nbytes: int) -> int:
    """Bytes a request of ``nbytes`` is rounded to (``round_size``, 512 B granularity)."""
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    return -(-nbytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    """Bytes of the segment ``cudaMalloc``-ed for a rounded request no cached block can serve."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(slots=True)
class _Block:
    segment: int
    offset: int
    size: int
    free: bool
    requested: int = 0
    prev: _Block | None = None
    next: _Block | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """What the allocator model saw over a whole event stream."""

    peak_requested: int
    """Most bytes requested (each rounded to 512 B) at once: what the tracker counts."""
    peak_allocated: int
    """Most bytes in blocks handed out at once (``max_memory_allocated``): the requests plus
    the remainders of blocks too small to split off (under 512 B small, up to 1 MiB large), as
    ``malloc`` adds ``block->size``, not ``requested_size``, to ``allocated_bytes``."""
    peak_reserved: int
    """Most bytes in segments at once (``max_memory_reserved``)."""
    allocated_at_reserved_peak: int
    """The most bytes handed out while reserved memory stood at its peak."""
    segments: int
    """Segments created (``cudaMalloc`` calls)."""
    alloc_retries: int
    """Allocations that failed against ``capacity``, freed the cache and were retried."""
    ooms: int
    """Allocations that still did not fit after the retry (counted, then served anyway)."""

    @property
    def fragmentation(self) -> int:
        """Reserved minus allocated at the reserved peak (at its fullest): cached bytes that no
        tensor held even when the reserved segments were most used."""
        return self.peak_reserved - self.allocated_at_reserved_peak


class CachingAllocator:
    """The default CUDA caching allocator on one stream; ``capacity``: bytes ``cudaMalloc`` may hold."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._free: dict[bool, list[tuple[int, int, int, int]]] = {True: [], False: []}
        """Per pool (small?): sorted (size, segment, offset, id) of cached free blocks."""
        self._by_key: dict[tuple[int, int, int, int], _Block] = {}
        self._segments: dict[int, tuple[bool, _Block, int]] = {}
        """segment -> (small pool?, first block, size)."""
        self.requested = 0
        self.peak_requested = 0
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.allocated_at_reserved_peak = 0
        self.n_segments = 0
        self.alloc_retries = 0
        self.ooms = 0
        self._ids = 0

    # -- free-list bookkeeping ------------------------------------------------------------------
    def _key(self, block: _Block) -> tuple[int, int, int, int]:
        return (block.size, block.segment, block.offset, id(block))

    def _cache(self, block: _Block, small: bool) -> None:
        key = self._key(block)
        bisect.insort(self._free[small], key)
        self._by_key[key] = block

    def _uncache(self, block: _Block, small: bool) -> None:
        key = self._key(block)
        pool = self._free[small]
        del pool[bisect.bisect_left(pool, key)]
        del self._by_key[key]

    # -- allocation -----------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> _Block:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1, -1, -1))
        if i >= len(pool):
            block = self._new_segment(size, small)
        else:
            block = self._by_key.pop(pool.pop(i))
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = _Block(block.segment, block.offset + size, remaining, True, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._cache(rest, small)
        block.free = False
        block.requested = size
        self.requested += size
        self.peak_requested = max(self.peak_requested, self.requested)
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        if self.reserved == self.peak_reserved and self.allocated > self.allocated_at_reserved_peak:
            self.allocated_at_reserved_peak = self.allocated
        return block

    def _new_segment(self, size: int, small: bool) -> _Block:
        seg_bytes = segment_size(size)
        if self.capacity is not None and self.reserved + seg_bytes > self.capacity:
            self.alloc_retries += 1
            self.release_cached()
            if self.reserved + seg_bytes > self.capacity:
                self.ooms += 1
        self.n_segments += 1
        block = _Block(self.n_segments, 0, seg_bytes, True)
        self._segments[self.n_segments] = (small, block, seg_bytes)
        self.reserved += seg_bytes
        if self.reserved > self.peak_reserved:
            self.peak_reserved = self.reserved
            self.allocated_at_reserved_peak = 0  # malloc records what this segment's caller adds
        return block

    def release_cached(self) -> None:
        """``empty_cache``: give every segment that is one free block back to the driver."""
        for seg, (small, first, seg_bytes) in list(self._segments.items()):
            if first.free and first.next is None:
                self._uncache(first, small)
                del self._segments[seg]
                self.reserved -= seg_bytes

    def free(self, block: _Block) -> None:
        small = self._segments[block.segment][0]
        self.allocated -= block.size
        self.requested -= block.requested
        block.free = True
        prev = block.prev
        if prev is not None and prev.free:
            self._uncache(prev, small)
            prev.size += block.size
            prev.next = block.next
            if block.next is not None:
                block.next.prev = prev
            block = prev
        nxt = block.next
        if nxt is not None and nxt.free:
            self._uncache(nxt, small)
            block.size += nxt.size
            block.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = block
        self._cache(block, small)

    def result(self) -> Replay:
        return Replay(
            peak_requested=self.peak_requested,
            peak_allocated=self.peak_allocated,
            peak_reserved=self.peak_reserved,
            allocated_at_reserved_peak=self.allocated_at_reserved_peak,
            segments=self.n_segments,
            alloc_retries=self.alloc_retries,
            ooms=self.ooms,
        )


def replay(sizes: list[int], stream: Iterable[int], capacity: int | None = None) -> Replay:
    """Run an event stream through the allocator: ``i`` allocates ``sizes[i]`` bytes, ``~i`` frees it.

    Blocks never freed stay allocated to the end (parameters, optimizer state).
    """
    allocator = CachingAllocator(capacity)
    handed: dict[int, _Block] = {}
    for event in stream:
        if event >= 0:
            handed[event] = allocator.malloc(sizes[event])
        else:
            allocator.free(handed.pop(~event))
    return allocator.result()


def replay_tracker(tracker: object, capacity: int | None = None) -> Replay:
    """Replay what a ``Tracker`` recorded. Tensors registered before the step (weights,
    quantization state) were allocated first, in registration order (the model's parameter
    order, an approximation of the order the loader created them)."""
    blocks = tracker.blocks  # type: ignore[attr-defined]
    return replay([b.size for b in blocks], tracker.stream, capacity)  # type: ignore[attr-defined]
