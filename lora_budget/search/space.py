"""The set-up space ``search`` walks, and the walk itself.

A set-up is GPU type x GPU count x strategy x offload x method x rank x optimizer x gradient
checkpointing x micro-batch x accumulation. Two facts prune the walk without changing its answer:

* The memory model does not depend on the GPU type (only its capacity does), and it depends on
  accumulation only through ``grad_accum > 1`` (gradients stay alive into the next micro-batch's
  forward, see ``core/peak.py`` and ``core/sharding.py``). So one ``PeakModel`` per
  (count, strategy, offload, method, rank, optimizer, checkpointing, accum > 1) serves every card.
* Peak memory grows with the micro-batch (``core/fit.py``), so the largest fitting micro-batch of
  the grid is found by bisection, and every smaller one fits too. In the time model
  (``perf/time.py``) compute grows linearly with b while the optimizer step and the exposed
  communication are per step, so tokens/s never falls as b grows: for a fixed rest of the set-up
  the largest fitting micro-batch is at least as fast and as cheap, and only it is timed.

``candidates`` counts every grid point the walk stands for, fitting or not; ``evaluated`` counts
the memory models built and the time estimates made.
"""

from __future__ import annotations

import multiprocessing

from lora_budget import records
from lora_budget.api import card_calibration
from lora_budget.catalog.gpus import GPU
from lora_budget.core.model import peak_model
from lora_budget.errors import LoraBudgetError
from lora_budget.perf.time import estimate_time
from lora_budget.records import dataclass
from lora_budget.spec import ModelRef, TrainSpec

BATCHES = (1, 2, 4, 8, 16, 32, 64)
ACCUMS = (1, 2, 4, 8, 16)
COUNTS = (1, 2, 4, 8)
RANKS = (8, 16, 32, 64)
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")
MULTI_STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")
OFFLOADS = ("none", "optimizer")


@dataclass(frozen=True, slots=True, kw_only=True)
class Space:
    model: ModelRef
    gpus: tuple[tuple[GPU, int], ...]
    """Each card with the most of it available."""
    methods: tuple[str, ...] = ("full", "lora", "qlora")
    ranks: tuple[int, ...] = RANKS
    optimizers: tuple[str, ...] = OPTIMIZERS
    counts: tuple[int, ...] = COUNTS
    strategies: tuple[str, ...] = MULTI_STRATEGIES
    offloads: tuple[str, ...] = OFFLOADS
    batches: tuple[int, ...] = BATCHES
    accums: tuple[int, ...] = ACCUMS
    seq_len: int = 2048
    dtype: str = "bf16"


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    spec: TrainSpec
    gpu: GPU
    hours: float
    gpu_hours: float
    cost_usd: float | None
    peak_bytes: int
    utilization: float
    """Fraction of the card's peak 16-bit FLOP/s the time model assumes (``perf/utilization.py``)."""
    utilization_assumed: bool
    """The utilization is the per-method default, not calibrated from profiles of this card."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    setups: tuple[Setup, ...]
    candidates: int
    evaluated: int
    utilization_note: str


def _memory_specs(space: Space):
    """Every card-independent set-up the memory model depends on (checkpointing aside: see ``walk``)."""
    top = max(n for _, n in space.gpus)
    for n in (c for c in space.counts if c <= top):
        for strategy in ("ddp",) if n == 1 else space.strategies:
            for offload in space.offloads:
                for method in space.methods:
                    for rank in (space.ranks[0],) if method == "full" else space.ranks:
                        for opt in space.optimizers:
                            yield n, strategy, offload, method, rank, opt


def grid_size(space: Space) -> int:
    """Grid points the walk stands for: every card at every count it has, times everything else."""
    per = len(space.batches) * len(space.accums)
    total = 0
    for n, *_rest in _memory_specs(space):
        cards = sum(1 for _, most in space.gpus if n <= most)
        total += 2 * cards * per  # with and without checkpointing
    return total


def _largest_fitting(fit_bytes, batches: tuple[int, ...], capacity: int) -> int:
    """Index of the largest micro-batch in ``batches`` that fits (-1 if none): bisection over
    ``fit_bytes(i)``, the bytes micro-batch ``batches[i]`` must fit in."""
    lo, hi = 0, len(batches) - 1
    if fit_bytes(0) > capacity:
        return -1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fit_bytes(mid) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _memo(fn):
    """``fn`` of a grid index, each evaluated once: every card bisects the same model's micro-batches."""
    seen: dict = {}

    def get(i):
        if i not in seen:
            seen[i] = fn(i)
        return seen[i]

    return get


def walk(
    space: Space, total_tokens: int, prices: dict[str, float], overhead_bytes: int = 0, *, workers: int = 1
) -> SearchResult:
    """Every fitting set-up that is not beaten by a larger micro-batch of the same set-up.

    As ``plan`` does, a card's calibrated overhead is added to its peaks unless ``overhead_bytes`` is given.
    ``workers`` > 1 splits the card-independent set-ups over that many forked processes (same answer).
    """
    specs = list(_memory_specs(space))
    if workers > 1 and len(specs) > workers and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            parts = pool.starmap(
                _walk_part, [(space, specs[i::workers], total_tokens, prices, overhead_bytes) for i in range(workers)]
            )
        setups = tuple(s for part, _ in parts for s in part)
        evaluated = sum(n for _, n in parts)
    else:
        setups, evaluated = _walk_part(space, specs, total_tokens, prices, overhead_bytes)
    return SearchResult(
        setups=setups,
        candidates=grid_size(space),
        evaluated=evaluated,
        utilization_note=utilization_note(setups),
    )


def utilization_note(setups: tuple[Setup, ...]) -> str:
    """Where the time that ranks the set-ups is weakest: the GPU utilization, assumed per method until
    profiles of a card calibrate it, and the communication overlap, always assumed."""
    assumed = {s.spec.method: s.utilization for s in setups if s.utilization_assumed}
    calibrated = sorted({f"{s.spec.method} on {s.gpu.name}" for s in setups if not s.utilization_assumed})
    parts = []
    if assumed:
        used = ", ".join(f"{m} {u:.0%}" for m, u in sorted(assumed.items()))
        parts.append(
            f"time is weakest in GPU utilization: an assumed default per method ({used} of peak 16-bit "
            "TFLOP/s) until profiles calibrate it (lora-budget profile, then calibrate)"
        )
    if calibrated:
        parts.append(f"GPU utilization calibrated from profiles for {', '.join(calibrated)}")
    return "; ".join([*parts, "communication overlap is assumed too"])


def _walk_part(
    space: Space, specs: list, total_tokens: int, prices: dict[str, float], overhead_bytes: int
) -> tuple[tuple[Setup, ...], int]:
    out: list[Setup] = []
    evaluated = 0
    for n, strategy, offload, method, rank, opt in specs:
        cards = [g for g, most in space.gpus if n <= most]
        capacity = {}
        for gpu in cards:
            cal = card_calibration(gpu, overhead_bytes)
            capacity[gpu.name] = gpu.memory_bytes - (cal.overhead_bytes if cal is not None else 0)
        largest = max(capacity.values(), default=0)
        for ckpt in (True, False):  # checkpointing first: where it does not fit, nothing without it does
            try:
                base = TrainSpec(
                    model=space.model,
                    method=method,
                    rank=rank,
                    optimizer=opt,
                    grad_ckpt=ckpt,
                    gpus=n,
                    strategy=strategy,
                    offload=offload,
                    seq_len=space.seq_len,
                    dtype=space.dtype,
                )
            except LoraBudgetError:
                break  # not a valid combination (e.g. offload on one GPU), with or without checkpointing
            fitted = False
            for accumulates in (False, True):  # accumulation only adds memory: skip it where one step fails
                accums = [a for a in space.accums if (a > 1) == accumulates]
                if not accums:
                    continue
                probe = records.replace(base, grad_accum=accums[-1])
                model = peak_model(probe, overhead_bytes)
                evaluated += 1
                if model.fit_bytes(space.batches[0], space.seq_len) > largest:
                    break
                fitted = True
                fit_bytes = _memo(lambda i, model=model: model.fit_bytes(space.batches[i], space.seq_len))
                # the most accumulation of the class: per-step optimizer and communication time
                # spread over more tokens, so it is at least as fast and as cheap per token
                at_batch = _memo(lambda i, probe=probe: records.replace(probe, batch_size=space.batches[i]))
                for gpu in cards:
                    i = _largest_fitting(fit_bytes, space.batches, capacity[gpu.name])
                    if i < 0:
                        continue
                    b = space.batches[i]
                    spec = at_batch(i)
                    t = estimate_time(spec, gpu, total_tokens=total_tokens, price_usd_per_h=prices.get(gpu.name))
                    evaluated += 1
                    if t.wall_s is None:
                        continue
                    hours = t.wall_s / 3600
                    out.append(
                        Setup(
                            spec=spec,
                            gpu=gpu,
                            hours=hours,
                            gpu_hours=hours * n,
                            cost_usd=t.cost_usd,
                            peak_bytes=model.peak_bytes(b, space.seq_len) + gpu.memory_bytes - capacity[gpu.name],
                            utilization=t.utilization,
                            utilization_assumed="assumed default" in t.utilization_source,
                        )
                    )
            if not fitted:
                break
    return tuple(out), evaluated


def pareto(setups: tuple[Setup, ...], by_cost: bool) -> tuple[Setup, ...]:
    """Set-ups no other beats on both wall hours and cost (or GPU-hours when ``by_cost`` is False),
    cheapest first."""

    def key(s: Setup) -> float:
        return s.cost_usd if by_cost else s.gpu_hours

    pool = [s for s in setups if not by_cost or s.cost_usd is not None]
    pool.sort(key=lambda s: (key(s), s.hours))
    front: list[Setup] = []
    best = float("inf")
    for s in pool:
        if s.hours < best:
            front.append(s)
            best = s.hours
    return tuple(front)


def command_line(s: Setup, total_tokens: int) -> str:
    """The ``lora-budget plan`` command that plans this set-up."""
    spec = s.spec
    parts = [f"lora-budget plan -m {spec.model.name} -g '{s.gpu.name}' --method {spec.method}"]
    if spec.method != "full":
        parts.append(f"--rank {spec.rank}")
    parts.append(f"--optimizer {spec.optimizer} --batch-size {spec.batch_size} --grad-accum {spec.grad_accum}")
    parts.append(f"--seq-len {spec.seq_len}")
    if spec.grad_ckpt:
        parts.append("--grad-ckpt")
    if spec.gpus > 1:
        parts.append(f"--gpus {spec.gpus} --strategy {spec.strategy}")
    if spec.offload != "none":
        parts.append(f"--offload {spec.offload}")
    parts.append(f"--tokens {total_tokens}")
    return " ".join(parts)
