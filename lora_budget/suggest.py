"""What to change when a plan does not fit, and the fit searches ``plan`` reports, with shared models.

Everything here is a function of the spec less its micro-batch and sequence length (``StepKey``)
plus b and s themselves, so the models are built once per ``StepKey`` and a sweep over b and s
(``plan()`` called for many set-ups, ``serve`` as one types) reuses them:

* each candidate change's model is cached by (``StepKey``, change, overhead) (``_candidate``);
* what is known of where a candidate fits is kept beside it: peak memory grows with the
  micro-batch (``core/fit.py``, the premise of every fit search here), so once batch b fits at
  sequence s every smaller one does, and once b does not fit no larger one does. A candidate is
  evaluated only where that does not already answer;
* the largest micro-batch at s and the longest sequence at b are cached per ``StepKey``.

``tests/test_api_speed.py`` checks that ``plan()``'s JSON is byte-identical to the planner before
any of this, over 400 varied specs.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

from lora_budget import records
from lora_budget.core.fit import max_batch_size, max_seq_len
from lora_budget.core.model import shared_peak_model
from lora_budget.core.peak import PeakModel
from lora_budget.core.static import StepKey
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field
from lora_budget.spec import TrainSpec

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any

    Change = tuple[tuple[str, Any], ...]
    """A change to a spec as (field, value) pairs: hashable, so the model it makes is cached."""

GPU_COUNTS = (2, 4, 8, 16, 32, 64)
"""World sizes the multi-GPU suggestion tries (nodes of 8 beyond 8)."""
LIGHTEST_FIRST = ("zero1", "zero2", "fsdp")
"""Strategies in order of the communication they add; ddp never lowers per-GPU memory."""
KNOWN_LIMIT = 512
"""Sequence lengths per capacity a candidate remembers fits for before it starts afresh."""
KNOWN_CAPACITIES = 64
"""GPU capacities a candidate remembers fits for (a long-running ``serve`` sees many) before it starts afresh."""
NEVER = 1 << 62
"""A micro-batch no search reaches: no miss known yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    """One change to the spec and what it does to the peak."""

    change: str
    """What to change, as a user would type it (``--grad-ckpt``)."""
    peak_bytes: int
    fits: bool


@dataclass(slots=True)
class _Candidate:
    """A candidate change's shared model and where it was already found to fit or not.

    Peak memory grows with the micro-batch b and the sequence length s, so a fit at (b, s) answers
    every (b' <= b, s' <= s) and a miss every (b' >= b, s' >= s). ``known`` keeps, per capacity and
    per sequence length seen, the largest b known to fit and the smallest known not to, each
    propagated to the sequence lengths it answers for: the first is then non-increasing in s and
    the second non-decreasing, so a new sequence length takes its bounds from its two neighbours.
    """

    model: PeakModel
    known: dict[int, tuple[list[int], dict[int, list[int]]]] = field(default_factory=dict)
    """capacity -> (sequence lengths seen, sorted; s -> [largest b known to fit (0: none), smallest
    b known not to])."""

    def fits(self, batch_size: int, seq_len: int, capacity: int) -> bool:
        known = self.known.get(capacity)
        bounds = known[1].get(seq_len) if known is not None else None
        if bounds is not None:
            if batch_size <= bounds[0]:
                return True
            if batch_size >= bounds[1]:
                return False
        return self._evaluate(batch_size, seq_len, capacity)

    def _evaluate(self, batch_size: int, seq_len: int, capacity: int) -> bool:
        known = self.known.get(capacity)
        if known is None or len(known[0]) >= KNOWN_LIMIT:
            if len(self.known) >= KNOWN_CAPACITIES:
                self.known.clear()
            known = self.known[capacity] = ([], {})
        order, by_seq = known
        i = bisect.bisect_left(order, seq_len)
        if i == len(order) or order[i] != seq_len:
            fit = by_seq[order[i]][0] if i < len(order) else 0  # the next longer sequence's
            miss = by_seq[order[i - 1]][1] if i > 0 else NEVER  # the next shorter sequence's
            order.insert(i, seq_len)
            by_seq[seq_len] = [fit, miss]
            if batch_size <= fit or batch_size >= miss:
                return batch_size <= fit
        ok = self.model.fit_bytes(batch_size, seq_len) <= capacity
        if ok:  # every shorter sequence fits this micro-batch too
            for s in reversed(order[: i + 1]):
                if by_seq[s][0] >= batch_size:
                    break
                by_seq[s][0] = batch_size
        else:  # no longer sequence fits it
            for s in order[i:]:
                if by_seq[s][1] <= batch_size:
                    break
                by_seq[s][1] = batch_size
        return ok


def shared_model(key: StepKey, overhead: int) -> PeakModel:
    """The model of ``key``'s specs (``core.model.shared_peak_model``): evaluate it at a spec's own b and s."""
    return shared_peak_model(key.spec, overhead)


def suggest(spec: TrainSpec, key: StepKey, capacity: int, overhead: int) -> tuple[Suggestion, ...]:
    """Single changes that make a non-fitting ``spec`` (of ``key``) fit, cheapest in training cost first."""
    software, memory, multi, method = _options(key, overhead)
    options = list(software)
    if spec.batch_size > 1:
        n = spec.batch_size * spec.grad_accum
        options.append(
            _Option(f"--batch-size 1 --grad-accum {n}", (("batch_size", 1), ("grad_accum", n)), key, overhead)
        )
    options += memory
    if spec.gpus == 1:
        # the smallest GPU count whose per-GPU peak fits, with the lightest strategy at that count,
        # adding checkpointing only where no strategy fits without it (at most one suggestion)
        first = multi.first_fit(spec.batch_size, spec.seq_len, capacity)
        options += [first] if first is not None else []
    options += method
    out: list[Suggestion] = []
    taken: list[frozenset[str]] = []
    for option in options:
        if any(words <= option.words for words in taken):
            continue  # a smaller change already fits (its model need not be built)
        if option.candidate() is None:
            continue
        b = option.batch_size or spec.batch_size
        if option.fits(b, spec.seq_len, capacity):
            peak = option.candidate().model.peak_bytes(b, spec.seq_len)
            out.append(Suggestion(change=option.label, peak_bytes=peak, fits=True))
            taken.append(option.words)
    # shorter sequences, as a last software change; the spec does not fit at its own sequence
    # length, so the longest that fits is below it at any search limit (fit_bytes grows with s)
    seq = longest_sequence(spec, key, capacity, overhead)
    if 0 < seq < spec.seq_len:
        peak = shared_model(key, overhead).peak_bytes(spec.batch_size, seq)
        out.append(Suggestion(change=f"--seq-len {seq}", peak_bytes=peak, fits=True))
    return tuple(out)


def largest_batch(spec: TrainSpec, key: StepKey, capacity: int, overhead: int) -> int:
    """``core.fit.max_batch_size`` of ``spec`` (of ``key``) at its sequence length."""
    return _max_batch_size(key, overhead, spec.seq_len, capacity)


def longest_sequence(spec: TrainSpec, key: StepKey, capacity: int, overhead: int) -> int:
    """``core.fit.max_seq_len`` of ``spec`` (of ``key``) at its micro-batch, up to the model's positions
    or the spec's own sequence length if longer.

    The search up to the positions answers every longer limit too unless it reached the positions
    (the fit grows with s), so only a spec whose every position fits searches on to its own length.
    """
    positions = spec.model.shape.max_positions
    seq = _max_seq_len(key, overhead, spec.batch_size, capacity, positions)
    if seq < positions or spec.seq_len <= positions:
        return seq
    return _max_seq_len(key, overhead, spec.batch_size, capacity, spec.seq_len)


@lru_cache(maxsize=65536)
def _candidate(key: StepKey, change: Change, overhead: int) -> _Candidate | None:
    """``key``'s spec with ``change``; None where the change does not make a valid spec.

    Validity is taken once per ``StepKey``: ``TrainSpec``'s checks that read the micro-batch or the
    sequence length (their positivity; GRPO's completion length) involve no field a change sets.
    """
    try:
        new = records.replace(key.spec, **dict(change))
    except LoraBudgetError:
        return None
    if new.model.shape.derived:
        from lora_budget.core.derived import stored_coefficients

        if stored_coefficients(new) is None:
            return None  # a trace-derived model: suggest what stored coefficients plan, never trace here
    return _Candidate(model=shared_peak_model(new, overhead))


@lru_cache(maxsize=65536)
def _max_batch_size(key: StepKey, overhead: int, seq_len: int, capacity: int) -> int:
    return max_batch_size(shared_model(key, overhead), seq_len, capacity)


@lru_cache(maxsize=65536)
def _max_seq_len(key: StepKey, overhead: int, batch_size: int, capacity: int, limit: int) -> int:
    return max_seq_len(shared_model(key, overhead), batch_size, capacity, limit)


class _Option:
    """One candidate change for ``key``'s specs: its label, its fields, and its model, built on first use."""

    __slots__ = ("label", "change", "words", "batch_size", "_key", "_overhead", "_built", "_candidate")

    def __init__(self, label: str, change: Change, key: StepKey, overhead: int) -> None:
        self.label, self.change, self._key, self._overhead = label, change, key, overhead
        self.words = frozenset(label.split())
        self.batch_size = dict(change).get("batch_size", 0)
        """The micro-batch the change sets (0: the spec's own)."""
        self._built = False
        self._candidate: _Candidate | None = None

    def candidate(self) -> _Candidate | None:
        """None where the change does not make a valid spec."""
        if not self._built:
            self._candidate, self._built = _candidate(self._key, self.change, self._overhead), True
        return self._candidate

    def fits(self, batch_size: int, seq_len: int, capacity: int) -> bool:
        c = self._candidate if self._built else self.candidate()
        return c is not None and c.fits(batch_size, seq_len, capacity)


@dataclass(slots=True)
class _Run:
    """Options tried in order for the first that fits, and the first found per (capacity, s, b).

    If option i is the first to fit at micro-batch b, none before it fits at any larger b and it
    fits at every smaller one: the first at b lies between the firsts known at the largest smaller
    and the smallest larger micro-batch (same s and capacity), and only that span is tried.
    """

    options: tuple[_Option, ...]
    firsts: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    """(capacity, sequence length) -> micro-batch -> index of the first that fits (len: none)."""

    def first_fit(self, batch_size: int, seq_len: int, capacity: int) -> _Option | None:
        options = self.options
        row = self.firsts.get((capacity, seq_len))
        if row is None:
            if len(self.firsts) >= KNOWN_LIMIT:
                self.firsts.clear()
            row = self.firsts[(capacity, seq_len)] = {}
        i = row.get(batch_size)
        if i is None:
            lo = max((j for b, j in row.items() if b < batch_size), default=0)
            hi = min((j for b, j in row.items() if b > batch_size), default=len(options))
            i = next((j for j in range(lo, hi) if options[j].fits(batch_size, seq_len, capacity)), hi)
            row[batch_size] = i
        return options[i] if i < len(options) else None


@lru_cache(maxsize=4096)
def _options(key: StepKey, overhead: int) -> tuple[tuple[_Option, ...], tuple[_Option, ...], _Run, tuple[_Option, ...]]:
    """The batch-independent candidate changes in the runs ``suggest`` tries them in: software
    changes (then the one-sequence micro-batch), checkpointing with 8-bit state, more GPUs (every
    count x with checkpointing or not x strategy, in order), the method."""
    spec = key.spec

    def run(*pairs: tuple[str, Change]) -> tuple[_Option, ...]:
        return tuple(_Option(label, change, key, overhead) for label, change in pairs)

    software = []
    if not spec.grad_ckpt:
        software.append(("--grad-ckpt", (("grad_ckpt", True),)))
    if spec.optimizer in ("adamw", "adamw_foreach", "paged_adamw"):
        software.append(("--optimizer adamw8bit", (("optimizer", "adamw8bit"),)))
        software.append(("--optimizer paged_adamw8bit", (("optimizer", "paged_adamw8bit"),)))
    memory = []
    if not spec.grad_ckpt and spec.optimizer in ("adamw", "adamw_foreach"):
        memory.append(("--grad-ckpt --optimizer adamw8bit", (("grad_ckpt", True), ("optimizer", "adamw8bit"))))
    multi = []
    variants: list[Change] = [()] if spec.grad_ckpt else [(), (("grad_ckpt", True),)]
    for n in GPU_COUNTS:
        for extra in variants:
            for strategy in LIGHTEST_FIRST:
                label = ("--grad-ckpt " if extra else "") + f"--gpus {n} --strategy {strategy}"
                multi.append((label, (*extra, ("gpus", n), ("strategy", strategy))))
    method = []
    if spec.method in ("full", "lora", "lora8bit"):
        method.append(("--method qlora", (("method", "qlora"), ("master_weights", False))))
        if not spec.grad_ckpt:
            method.append(
                ("--method qlora --grad-ckpt", (("method", "qlora"), ("master_weights", False), ("grad_ckpt", True)))
            )
    return run(*software), run(*memory), _Run(options=run(*multi)), run(*method)


def clear_caches() -> None:
    """Forget every shared model, every fit found and every cached part of the planner (for tests and
    benchmarks that time a cold planner, and for a process that wants the memory back)."""
    from lora_budget.core import lora, model, params, peak, static

    for cached in (
        _options,
        _candidate,
        _max_batch_size,
        _max_seq_len,
        model._shared_peak_model,
        peak._activation_model,
        static._static_memory,
        lora._resolve_targets,
        lora._adapted,
        lora._adapter_tensors,
        params.inventory,
        params.linear_names,
        params.param_count,
    ):
        cached.cache_clear()
