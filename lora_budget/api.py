"""Python API: ``lora_budget.plan(...)`` returns dataclasses; printing lives in the CLI."""

from __future__ import annotations

from functools import lru_cache

from lora_budget import records
from lora_budget.breakdown import CATEGORIES, Breakdown
from lora_budget.catalog.gpus import GPU, resolve_gpu, smallest_fitting
from lora_budget.catalog.models import resolve_model
from lora_budget.core.params import param_count
from lora_budget.core.peak import PeakModel
from lora_budget.core.static import StepKey
from lora_budget.errors import LoraBudgetError
from lora_budget.perf.comm import INTER_NODE_GBPS
from lora_budget.perf.time import TimeEstimate, estimate_time
from lora_budget.records import dataclass, field, fields
from lora_budget.spec import LIBRARIES, METHODS, ModelRef, TrainSpec
from lora_budget.suggest import Suggestion, largest_batch, longest_sequence, shared_model, suggest
from lora_budget.units import fmt_gib

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any

    from lora_budget.catalog.calibration import CalibratedOverhead


MAIN_METHODS = ("full", "lora", "qlora")


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
                "suggestions": [records.asdict(s) for s in self.suggestions],
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
                    **({"ckpt_offload": True} if spec.ckpt_offload else {}),
                    **({"activation_offload": True} if spec.activation_offload else {}),
                    **({"compile": True} if spec.compile else {}),
                    **_versions(spec),
                },
            }
        )
        return out


def _versions(spec: TrainSpec) -> dict[str, str]:
    """The library releases the spec assumes, where they are not the defaults (the trace's own)."""
    defaults = {f.name: f.default for f in fields(TrainSpec)}
    return {name: getattr(spec, name) for name in LIBRARIES if getattr(spec, name) != defaults[name]}


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
            out["calibration"] = records.asdict(self.calibration)
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
    key = StepKey(spec)
    model: PeakModel = shared_model(key, overhead_bytes)  # evaluated at spec's own b and s only
    capacity = gpu.memory_bytes
    breakdown = model.breakdown(spec.batch_size, spec.seq_len)
    paged = model.static.optimizer_pageable
    fits = breakdown.peak_bytes - paged <= capacity
    suggestions = suggest(spec, key, capacity, overhead_bytes) if (advise and not fits) else ()
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
        max_batch_size=largest_batch(spec, key, capacity, overhead_bytes),
        max_seq_len=longest_sequence(spec, key, capacity, overhead_bytes),
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


def card_calibration(card: GPU, overhead_bytes: int = 0) -> CalibratedOverhead | None:
    """The calibrated overhead ``plan`` (and ``search``) adds to a card's peaks: none when the caller
    gives its own ``overhead_bytes`` or the card is a bare size, else the card's calibration if any."""
    if overhead_bytes or card.from_size:
        return None
    return calibrated_overhead(card.name)


def calibrated_overhead(gpu_name: str) -> CalibratedOverhead | None:
    """The shipped calibration of a card (catalog/calibration.py, imported on the first card that may
    have one, so plan's start with a bare size does not pay for it)."""
    return _calibration_lookup()(gpu_name)


@lru_cache(maxsize=1)
def _calibration_lookup() -> Any:
    """catalog.calibration's ``calibrated_overhead``, imported once: an import statement per call costs
    about 5 us."""
    from lora_budget.catalog.calibration import calibrated_overhead as lookup

    return lookup


@lru_cache(maxsize=1)
def _spec_keywords() -> tuple[str, ...]:
    return tuple(
        f.name for f in records.fields(TrainSpec) if f.name not in ("model", "method", "batch_size", "warnings")
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
    if not isinstance(model, str | ModelRef) or not isinstance(gpu, str | GPU):
        raise LoraBudgetError(
            f"model and gpu must be names (str) or ModelRef / GPU values, got {type(model).__name__} "
            f"and {type(gpu).__name__}"
        )
    if not isinstance(methods, str | tuple | list) or not all(isinstance(m, str) for m in methods):
        raise LoraBudgetError(f"methods must be a comma list or a tuple of method names, got {methods!r:.80}")
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
    if isinstance(overhead_bytes, bool) or not isinstance(overhead_bytes, int) or overhead_bytes < 0:
        raise LoraBudgetError(f"overhead must be a non-negative int of bytes, got {overhead_bytes!r}")
    calibration = card_calibration(card, overhead_bytes)
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
            best = largest_batch(spec, StepKey(spec), card.memory_bytes, overhead_bytes)
            spec = records.replace(spec, batch_size=max(best, 1))
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
