"""Python API: ``lora_budget.plan(...)`` returns dataclasses; printing lives in the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lora_budget.breakdown import CATEGORIES, Breakdown
from lora_budget.catalog.calibration import CalibratedOverhead, calibrated_overhead
from lora_budget.catalog.gpus import GPU, resolve_gpu, smallest_fitting
from lora_budget.catalog.models import resolve_model
from lora_budget.core.fit import max_batch_size, max_seq_len
from lora_budget.core.params import param_count
from lora_budget.core.peak import PeakModel, shared_peak_model
from lora_budget.core.static import StepKey
from lora_budget.errors import LoraBudgetError
from lora_budget.perf.comm import INTER_NODE_GBPS
from lora_budget.perf.time import TimeEstimate, estimate_time
from lora_budget.spec import METHODS, ModelRef, TrainSpec
from lora_budget.units import fmt_gib

MAIN_METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    """One change to the spec and what it does to the peak."""

    change: str
    """What to change, as a user would type it (``--grad-ckpt``)."""
    peak_bytes: int
    fits: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodPlan:
    method: str
    spec: TrainSpec
    breakdown: Breakdown
    capacity_bytes: int
    fits: bool
    """The peak, less pageable optimizer state, is at most the GPU's memory."""
    paged_bytes: int
    """Optimizer state in paged memory that the driver may move to CPU under pressure."""
    max_batch_size: int
    """Largest micro-batch that fits at this sequence length (0: none)."""
    max_seq_len: int
    """Longest sequence that fits at this micro-batch, up to the model's max positions (0: none)."""
    suggestions: tuple[Suggestion, ...]
    """For a plan that does not fit: single changes that would make it fit, best first."""
    smallest_gpu: str | None = None
    """Smallest catalog card whose memory holds this peak (None if none does)."""
    warnings: tuple[str, ...] = ()
    time: TimeEstimate | None = None
    """Speed, and with a token count wall time and cost (lora_budget.perf); None when not asked for."""

    @property
    def peak_bytes(self) -> int:
        return self.breakdown.peak_bytes

    @property
    def headroom_bytes(self) -> int:
        """Capacity minus the bytes that must be resident (negative when it does not fit)."""
        return self.capacity_bytes - (self.peak_bytes - self.paged_bytes)

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        shape = spec.model.shape
        t = self.time
        out: dict[str, Any] = {
            "method": self.method,
            "fits": self.fits,
            "peak_bytes": self.peak_bytes,
            "headroom_bytes": self.headroom_bytes,
            "peak_phase": self.breakdown.phase,
        }
        out.update({f"{name}_bytes": value for name, value in self.breakdown.as_dict().items()})
        out.update(
            {
                "paged_bytes": self.paged_bytes,
                "max_batch_size": self.max_batch_size,
                "max_seq_len": self.max_seq_len,
                "suggestions": [dataclasses.asdict(s) for s in self.suggestions],
                "smallest_gpu": self.smallest_gpu,
                "warnings": list(self.warnings),
                "tokens_per_s": t.tokens_per_s if t else None,
                "step_s": t.step_s if t else None,
                "total_tokens": t.total_tokens if t else None,
                "wall_s": t.wall_s if t else None,
                "cost_usd": t.cost_usd if t else None,
                "time": t.to_dict() if t else None,
                "spec": {
                    "model": spec.model.name,
                    "hf_id": spec.model.hf_id,
                    "param_count": param_count(shape),
                    "method": spec.method,
                    "dtype": spec.dtype,
                    "master_weights": spec.master_weights,
                    "adapter_dtype": spec.adapter_dtype if spec.method != "full" else None,
                    "rank": spec.rank if spec.method != "full" else None,
                    "alpha": spec.alpha if spec.method != "full" else None,
                    "targets": spec.targets if spec.method != "full" else None,
                    "quant": spec.quant if spec.method == "qlora" else None,
                    "quant_blocksize": spec.quant_blocksize if spec.method == "qlora" else None,
                    "double_quant": spec.double_quant if spec.method == "qlora" else None,
                    "optimizer": spec.optimizer,
                    "batch_size": spec.batch_size,
                    "seq_len": spec.seq_len,
                    "grad_accum": spec.grad_accum,
                    "grad_ckpt": spec.grad_ckpt,
                    "attn": spec.attn,
                    "gpus": spec.gpus,
                    "strategy": spec.strategy,
                    "offload": spec.offload,
                    "framework": spec.framework,
                    "lora_dropout": spec.lora_dropout if spec.method != "full" else None,
                    "loss": spec.loss_kernel,
                    "kbit_prep": spec.kbit_prepared,
                    **(
                        {
                            "objective": spec.objective,
                            "reference": spec.reference_kind,
                            "sequences_per_example": spec.sequences_per_example,
                            "completion_len": spec.completion_tokens or None,
                            "vllm": spec.vllm if spec.objective == "grpo" else None,
                        }
                        if spec.objective != "sft"
                        else {}
                    ),
                    **({"eval_batch_size": spec.eval_batch_size} if spec.eval_batch_size else {}),
                },
            }
        )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    model: ModelRef
    gpu: GPU
    methods: tuple[MethodPlan, ...]
    notes: tuple[str, ...] = field(default=())
    calibration: CalibratedOverhead | None = None
    """The calibrated overhead included in every peak (None: no calibration for this GPU was used)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": 1,
            "model": {
                "name": self.model.name,
                "hf_id": self.model.hf_id,
                "param_count": param_count(self.model.shape),
                "source": self.model.source,
            },
            "gpu": {
                "name": self.gpu.name,
                "memory_bytes": self.gpu.memory_bytes,
                "bf16": self.gpu.bf16,
                "source": self.gpu.source,
            },
            "methods": [m.to_dict() for m in self.methods],
            "notes": list(self.notes),
        }
        if self.calibration is not None:
            out["calibration"] = dataclasses.asdict(self.calibration)
        return out

    def to_frame(self) -> Any:
        """One row per method, a column per category (bytes); needs pandas."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - exercised only without pandas
            raise LoraBudgetError("to_frame() needs pandas: pip install pandas") from None
        rows = []
        for m in self.methods:
            row = m.to_dict()
            spec = row.pop("spec")
            row.pop("suggestions")
            row.pop("warnings")
            row.pop("time")
            row["model"] = spec["model"]
            rows.append(row)
        return pd.DataFrame(rows)


Change = tuple[tuple[str, Any], ...]
"""A change to a spec as (field, value) pairs: hashable, so the model it makes is cached."""


def _suggest(spec: TrainSpec, model: PeakModel, capacity: int, overhead: int) -> tuple[Suggestion, ...]:
    """Single changes that make a non-fitting spec fit, cheapest in training cost first.

    The candidates' models are shared by every spec of the same ``StepKey`` (``_changed``), so a
    sweep over micro-batch and sequence length builds each of them once."""
    key = StepKey(spec)
    software, memory, method = _changes(key)
    candidates = list(software)
    if spec.batch_size > 1:
        n = spec.batch_size * spec.grad_accum
        candidates.append((f"--batch-size 1 --grad-accum {n}", (("batch_size", 1), ("grad_accum", n))))
    candidates += memory
    if spec.gpus == 1:
        candidates += _multi_gpu(spec, capacity, overhead)
    candidates += method
    out: list[Suggestion] = []
    for label, change in candidates:
        changed = _changed(key, change, overhead)
        if changed is None:
            continue
        if any(set(prev.change.split()) <= set(label.split()) for prev in out):
            continue  # a smaller change already fits
        b = dict(change).get("batch_size", spec.batch_size)
        if changed.fit_bytes(b, spec.seq_len) <= capacity:
            out.append(Suggestion(change=label, peak_bytes=changed.peak_bytes(b, spec.seq_len), fits=True))
    # shorter sequences, as a last software change; the spec does not fit at its own sequence
    # length, so the longest that fits is below it at any search limit (fit_bytes grows with s)
    seq = _max_seq_len(key, overhead, spec.batch_size, capacity, _seq_limit(spec))
    if 0 < seq < spec.seq_len:
        out.append(Suggestion(change=f"--seq-len {seq}", peak_bytes=model.peak_bytes(spec.batch_size, seq), fits=True))
    return tuple(out)


@lru_cache(maxsize=4096)
def _changes(key: StepKey) -> tuple[tuple[tuple[str, Change], ...], ...]:
    """The batch-independent candidate changes in three runs, in the order they are tried: software
    changes (then the one-sequence micro-batch), checkpointing with 8-bit state (then more GPUs),
    the method."""
    spec = key.spec
    software: list[tuple[str, Change]] = []
    if not spec.grad_ckpt:
        software.append(("--grad-ckpt", (("grad_ckpt", True),)))
    if spec.optimizer in ("adamw", "paged_adamw"):
        software.append(("--optimizer adamw8bit", (("optimizer", "adamw8bit"),)))
        software.append(("--optimizer paged_adamw8bit", (("optimizer", "paged_adamw8bit"),)))
    memory: list[tuple[str, Change]] = []
    if not spec.grad_ckpt and spec.optimizer == "adamw":
        memory.append(("--grad-ckpt --optimizer adamw8bit", (("grad_ckpt", True), ("optimizer", "adamw8bit"))))
    method: list[tuple[str, Change]] = []
    if spec.method in ("full", "lora", "lora8bit"):
        method.append(("--method qlora", (("method", "qlora"), ("master_weights", False))))
        if not spec.grad_ckpt:
            method.append(
                ("--method qlora --grad-ckpt", (("method", "qlora"), ("master_weights", False), ("grad_ckpt", True)))
            )
    return tuple(software), tuple(memory), tuple(method)


@lru_cache(maxsize=65536)
def _changed(key: StepKey, change: Change, overhead: int) -> PeakModel | None:
    """The (shared) model of ``key``'s spec with ``change``; None where the change is not a valid spec.

    Validity is taken once per ``StepKey``: ``TrainSpec``'s checks that read the micro-batch or the
    sequence length (their positivity; GRPO's completion length) involve no field a suggestion changes.
    """
    try:
        new = dataclasses.replace(key.spec, **dict(change))
    except LoraBudgetError:
        return None
    return shared_peak_model(new, overhead)


@lru_cache(maxsize=65536)
def _max_batch_size(key: StepKey, overhead: int, seq_len: int, capacity: int) -> int:
    return max_batch_size(shared_peak_model(key.spec, overhead), seq_len, capacity)


@lru_cache(maxsize=65536)
def _max_seq_len(key: StepKey, overhead: int, batch_size: int, capacity: int, limit: int) -> int:
    return max_seq_len(shared_peak_model(key.spec, overhead), batch_size, capacity, limit)


def _seq_limit(spec: TrainSpec) -> int:
    """The longest sequence the fit search tries: the model's positions, or the spec's own if longer."""
    return max(spec.model.shape.max_positions, spec.seq_len)


GPU_COUNTS = (2, 4, 8, 16, 32, 64)
"""World sizes the multi-GPU suggestion tries (nodes of 8 beyond 8)."""
LIGHTEST_FIRST = ("zero1", "zero2", "fsdp")
"""Strategies in order of the communication they add; ddp never lowers per-GPU memory."""


def _multi_gpu(spec: TrainSpec, capacity: int, overhead: int) -> list[tuple[str, Change]]:
    """The smallest GPU count whose per-GPU peak fits, with the lightest strategy at that count, adding
    gradient checkpointing only where no strategy fits without it (at most one suggestion).

    Activations do not shrink with data parallelism (each GPU runs its own micro-batch), so a
    spec whose activations alone overflow one GPU needs checkpointing at any GPU count.
    """
    key = StepKey(spec)
    for label, change in _multi_gpu_changes(key):
        model = _changed(key, change, overhead)
        if model is not None and model.fit_bytes(spec.batch_size, spec.seq_len) <= capacity:
            return [(label, change)]
    return []


@lru_cache(maxsize=4096)
def _multi_gpu_changes(key: StepKey) -> tuple[tuple[str, Change], ...]:
    """Every GPU count x (with checkpointing or not) x strategy ``_multi_gpu`` tries, in its order."""
    spec = key.spec
    variants: list[Change] = [()]
    if not spec.grad_ckpt:
        variants.append((("grad_ckpt", True),))
    out = []
    for n in GPU_COUNTS:
        for extra in variants:
            for strategy in LIGHTEST_FIRST:
                label = ("--grad-ckpt " if extra else "") + f"--gpus {n} --strategy {strategy}"
                out.append((label, (*extra, ("gpus", n), ("strategy", strategy))))
    return tuple(out)


def plan_spec(
    spec: TrainSpec,
    gpu: GPU,
    overhead_bytes: int = 0,
    advise: bool = True,
    *,
    speed: bool = True,
    total_tokens: int | None = None,
    price_usd_per_h: float | None = None,
    inter_node_gbps: float = INTER_NODE_GBPS,
) -> MethodPlan:
    """Plan one fully specified spec on one GPU; ``speed`` adds step time, tokens/s and, given
    ``total_tokens``, wall time and cost (``price_usd_per_h`` or the catalog's price)."""
    model: PeakModel = shared_peak_model(spec, overhead_bytes)  # evaluated at spec's own b and s only
    key = StepKey(spec)
    capacity = gpu.memory_bytes
    breakdown = model.breakdown(spec.batch_size, spec.seq_len)
    paged = model.static.optimizer_pageable
    fits = breakdown.peak_bytes - paged <= capacity
    suggestions = _suggest(spec, model, capacity, overhead_bytes) if (advise and not fits) else ()
    warnings = list(spec.warnings)
    if spec.dtype == "bf16" and not gpu.bf16:
        warnings.append(f"{gpu.name} has no native bf16; use --dtype fp16")
    return MethodPlan(
        method=spec.method,
        spec=spec,
        breakdown=breakdown,
        capacity_bytes=capacity,
        fits=fits,
        paged_bytes=paged,
        max_batch_size=_max_batch_size(key, overhead_bytes, spec.seq_len, capacity),
        max_seq_len=_max_seq_len(key, overhead_bytes, spec.batch_size, capacity, _seq_limit(spec)),
        suggestions=suggestions,
        smallest_gpu=(lambda g: g.name if g else None)(smallest_fitting(breakdown.peak_bytes - paged)),
        warnings=tuple(warnings),
        time=(
            estimate_time(
                spec, gpu, total_tokens=total_tokens, price_usd_per_h=price_usd_per_h, inter_node_gbps=inter_node_gbps
            )
            if speed
            else None
        ),
    )


_PLAN_OWN = ("model", "gpu", "methods", "batch_size", "overhead_bytes", "total_tokens", "price_usd_per_h")


def _check_keywords(spec_options: dict[str, Any]) -> None:
    """A misspelt keyword is a LoraBudgetError naming it and the valid ones, not TrainSpec's
    bare TypeError (``plan("8b", "h100", method="lora")`` means ``methods=``)."""
    valid = _spec_keywords()
    for key in spec_options:
        if key not in valid:
            import difflib

            names = [*_PLAN_OWN, "inter_node_gbps", *valid]
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LoraBudgetError(f"plan() got an unknown keyword {key!r}{hint}; valid: {', '.join(names)}")


@lru_cache(maxsize=1)
def _spec_keywords() -> tuple[str, ...]:
    return tuple(
        f.name for f in dataclasses.fields(TrainSpec) if f.name not in ("model", "method", "batch_size", "warnings")
    )


def plan(
    model: str | ModelRef = "7b",
    gpu: str | GPU = "24GB",
    methods: tuple[str, ...] | str = MAIN_METHODS,
    *,
    batch_size: int | str = 1,
    overhead_bytes: int = 0,
    total_tokens: int | None = None,
    price_usd_per_h: float | None = None,
    inter_node_gbps: float = INTER_NODE_GBPS,
    **spec_options: Any,
) -> PlanResult:
    """Plan fine-tuning ``model`` on ``gpu`` with each method.

    ``batch_size="auto"`` picks the largest micro-batch that fits, per method. Other keyword
    arguments are :class:`~lora_budget.spec.TrainSpec` fields (``seq_len``, ``rank``,
    ``optimizer``, ``grad_ckpt``, ...). ``total_tokens`` (tokens to train on, all epochs) adds wall time,
    and with ``price_usd_per_h`` (or a catalog price) cost, to each method's ``time``; ``inter_node_gbps``
    is the network bandwidth per GPU assumed when ``gpus`` spans more than one node.

    >>> result = plan("7b", "24GB")
    >>> [m.method for m in result.methods]
    ['full', 'lora', 'qlora']
    """
    _check_keywords(spec_options)
    ref = resolve_model(model) if isinstance(model, str) else model
    card = resolve_gpu(gpu) if isinstance(gpu, str) else gpu
    if isinstance(methods, str):
        methods = MAIN_METHODS if methods == "all" else tuple(m.strip() for m in methods.split(","))
    for m in methods:
        if m not in METHODS:
            raise LoraBudgetError(f"unknown method {m!r}; choose from {', '.join(METHODS)} or all")
    if total_tokens is not None and (isinstance(total_tokens, bool) or total_tokens <= 0):
        raise LoraBudgetError(f"the token count must be positive, got {total_tokens!r}")
    if price_usd_per_h is not None and not price_usd_per_h > 0:
        raise LoraBudgetError(f"the price must be a positive USD per GPU-hour, got {price_usd_per_h!r}")
    if isinstance(inter_node_gbps, bool) or not isinstance(inter_node_gbps, int | float) or not inter_node_gbps > 0:
        raise LoraBudgetError(f"the inter-node bandwidth must be a positive Gb/s per GPU, got {inter_node_gbps!r}")
    calibration = None if overhead_bytes or card.from_size else calibrated_overhead(card.name)
    if calibration is not None:
        overhead_bytes = calibration.overhead_bytes
    auto = batch_size == "auto"
    if not auto and not isinstance(batch_size, int):
        raise LoraBudgetError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
    plans = []
    for method in methods:
        options = dict(spec_options)
        if method != "full":
            options.pop("master_weights", None)
        spec = TrainSpec(model=ref, method=method, batch_size=1 if auto else int(batch_size), **options)
        if auto:
            best = _max_batch_size(StepKey(spec), overhead_bytes, spec.seq_len, card.memory_bytes)
            spec = dataclasses.replace(spec, batch_size=max(best, 1))
        plans.append(
            plan_spec(
                spec,
                card,
                overhead_bytes,
                total_tokens=total_tokens,
                price_usd_per_h=price_usd_per_h,
                inter_node_gbps=inter_node_gbps,
            )
        )
    notes = []
    speed_notes = {n for p in plans if p.time for n in p.time.notes}
    notes += sorted(speed_notes)
    if any(p.time and p.time.step_s is not None for p in plans):
        sources = {p.time.utilization_source for p in plans if p.time}
        if all("assumed default" in src for src in sources):
            used = ", ".join(f"{p.method} {p.time.utilization:.0%}" for p in plans if p.time)
            notes.append(
                f"speed: GPU utilization is an assumed default per method ({used} of peak 16-bit TFLOP/s) "
                "until profiles calibrate it; dequantization and optimizer time at datasheet bandwidth"
            )
    if card.from_size:
        notes.append(
            f"--gpu {card.name} taken as {card.memory_bytes:,} bytes ({fmt_gib(card.memory_bytes)}): GB is decimal, "
            "GiB binary; a card sold as 24 GB has 24 GiB, so use --gpu 24GiB or a card name such as --gpu rtx4090"
        )
    if calibration is not None:
        notes.append(
            f"peaks include {fmt_gib(calibration.overhead_bytes)} of calibrated overhead (CUDA context, allocator "
            f"reserve) from {calibration.rows} profiled configurations ({calibration.label}); "
            f"error bar: +/- {fmt_gib(calibration.error_bytes)}"
        )
    elif overhead_bytes == 0:
        notes.append(
            "peaks are the bytes PyTorch allocates for tensors; the CUDA context and allocator "
            "fragmentation come on top (no calibration for this GPU yet: pass --overhead SIZE to include them)"
        )
    return PlanResult(model=ref, gpu=card, methods=tuple(plans), notes=tuple(notes), calibration=calibration)


__all__ = ["CATEGORIES", "MethodPlan", "PlanResult", "Suggestion", "plan", "plan_spec"]
