"""The numbers behind a report: computed here, drawn in ``figures.py``, written in ``markdown.py``.

Pure Python (no matplotlib, no torch): the breakdown comes from :func:`lora_budget.api.plan`, the
scaling curves from the same :class:`~lora_budget.core.peak.PeakModel` the plan uses, the
crossing points from the plan's own fit search (largest micro-batch / longest sequence that fit).
"""

from __future__ import annotations

from typing import Any

from lora_budget import records
from lora_budget.breakdown import CATEGORIES
from lora_budget.core.model import peak_model
from lora_budget.records import dataclass

AXES = ("seq_len", "batch_size")
"""Scaling axes: peak memory vs sequence length (at the spec's micro-batch) and vs micro-batch
(at the spec's sequence length)."""

TIMELINE_POINTS = 2000
"""A traced step has ~10^4-10^5 events; the figure keeps the maximum of each of this many bins,
so the drawn peak is the true peak and an SVG stays small."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakdownRow:
    """One stacked bar: a method's bytes per category at its peak."""

    method: str
    categories: dict[str, int]
    peak_bytes: int
    phase: str
    fits: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPoint:
    method: str
    axis: str
    """``seq_len`` or ``batch_size``: the one that varies."""
    batch_size: int
    seq_len: int
    peak_bytes: int
    fit_bytes: int
    """Bytes that must be resident (peak less pageable optimizer state); what is compared to capacity."""

    @property
    def x(self) -> int:
        return self.seq_len if self.axis == "seq_len" else self.batch_size


@dataclass(frozen=True, slots=True, kw_only=True)
class Crossing:
    """Where a method's curve meets the GPU capacity: the largest value that still fits."""

    method: str
    axis: str
    max_fitting: int
    """Largest sequence length / micro-batch that fits (0: not even the smallest)."""
    peak_bytes: int
    """Peak at ``max_fitting`` (0 when nothing fits)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Live bytes over the events of one traced step (binned; each bin keeps its maximum)."""

    method: str
    points: tuple[tuple[int, int, str], ...]
    """(event, live bytes, phase), events numbered from the step's first op."""
    spans: tuple[tuple[str, int, int], ...]
    """(phase, first event, last event) of each contiguous phase."""
    peak_event: int
    peak_bytes: int
    events: int
    """Events in the step before binning."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParityRow:
    """One predicted-vs-measured pair (from profiles)."""

    method: str
    predicted_bytes: int
    measured_bytes: int
    label: str = ""

    @property
    def error_pct(self) -> float:
        """Signed error of the prediction, percent of the measurement."""
        return 100.0 * (self.predicted_bytes - self.measured_bytes) / self.measured_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportData:
    model_name: str
    gpu_name: str
    capacity_bytes: int
    settings: str
    """The shared step settings in words (batch, sequence, dtype, optimizer, ...)."""
    plan: Any
    """The :class:`~lora_budget.api.PlanResult` every number here comes from."""
    breakdown: tuple[BreakdownRow, ...]
    scaling: tuple[ScalingPoint, ...]
    crossings: tuple[Crossing, ...]
    timeline: Timeline | None = None
    parity: tuple[ParityRow, ...] = ()


def seq_grid(limit: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Sequence lengths 128 * 2^(k/4) up to ``limit`` (smooth on a log axis), plus ``extra``."""
    out = {limit}
    k = 0
    while (value := round(128 * 2 ** (k / 4))) < limit:
        out.add(value)
        k += 1
    out.update(v for v in extra if 0 < v <= limit)
    return sorted(out)


def batch_grid(largest_fit: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Micro-batches 1..n, n a power of two >= 4 and at least twice the largest batch that fits (max 1024)."""
    n = 4
    while n < 2 * largest_fit and n < 1024:
        n *= 2
    if n <= 64:
        values = set(range(1, n + 1))
    else:
        values = {round(2 ** (k / 4)) for k in range(0, 4 * n.bit_length()) if 2 ** (k / 4) <= n} | {n}
    values.update(v for v in extra if 0 < v <= n)
    return sorted(values)


def gather(model: Any, gpu: Any, methods: Any = "all", *, batch_size: int | str = 1, **spec_options: Any) -> ReportData:
    """Plan ``model`` on ``gpu`` for each method and compute the curves a report draws."""
    from lora_budget.api import plan
    from lora_budget.describe import spec_settings

    result = plan(model, gpu, methods, batch_size=batch_size, **spec_options)
    capacity = result.gpu.memory_bytes
    rows = tuple(
        BreakdownRow(
            method=m.method,
            categories=m.breakdown.as_dict(),
            peak_bytes=m.peak_bytes,
            phase=m.breakdown.phase,
            fits=m.fits,
        )
        for m in result.methods
    )
    points: list[ScalingPoint] = []
    crossings: list[Crossing] = []
    largest_batch = max(m.max_batch_size for m in result.methods)
    for m in result.methods:
        pm = peak_model(m.spec)
        spec = m.spec
        limit = max(spec.model.shape.max_positions, spec.seq_len)
        for s in seq_grid(limit, (spec.seq_len, m.max_seq_len)):
            points.append(_point(pm, m.method, "seq_len", spec.batch_size, s))
        for b in batch_grid(largest_batch, (spec.batch_size, m.max_batch_size)):
            points.append(_point(pm, m.method, "batch_size", b, spec.seq_len))
        crossings.append(
            Crossing(
                method=m.method,
                axis="seq_len",
                max_fitting=m.max_seq_len,
                peak_bytes=pm.peak_bytes(spec.batch_size, m.max_seq_len) if m.max_seq_len else 0,
            )
        )
        crossings.append(
            Crossing(
                method=m.method,
                axis="batch_size",
                max_fitting=m.max_batch_size,
                peak_bytes=pm.peak_bytes(m.max_batch_size, spec.seq_len) if m.max_batch_size else 0,
            )
        )
    settings = sorted({spec_settings(m.spec).split(", r=")[0] for m in result.methods})
    first = result.methods[0].spec
    if first.gpus > 1:  # every figure and table is per GPU
        offload = f", offload {first.offload}" if first.offload != "none" else ""
        settings.append(f"per GPU of {first.gpus} x {result.gpu.name}, {first.strategy}{offload}")
    return ReportData(
        model_name=result.model.name,
        gpu_name=result.gpu.name,
        capacity_bytes=capacity,
        settings="; ".join(settings),
        plan=result,
        breakdown=rows,
        scaling=tuple(points),
        crossings=tuple(crossings),
    )


def _point(pm: Any, method: str, axis: str, batch_size: int, seq_len: int) -> ScalingPoint:
    return ScalingPoint(
        method=method,
        axis=axis,
        batch_size=batch_size,
        seq_len=seq_len,
        peak_bytes=pm.peak_bytes(batch_size, seq_len),
        fit_bytes=pm.fit_bytes(batch_size, seq_len),
    )


def timeline_from_trace(trace_result: Any, points: int = TIMELINE_POINTS) -> Timeline:
    """The traced peak step's live bytes per event, binned to at most ``points`` maxima."""
    step = trace_result.peak_step
    rows = [(e, live, phase) for e, live, phase, s in trace_result.timeline if s == step]
    if not rows:
        raise ValueError("the trace kept no timeline; run it with keep_timeline=True")
    first = rows[0][0]
    rows = [(e - first, live, phase) for e, live, phase in rows]
    spans: list[tuple[str, int, int]] = []
    for e, _, phase in rows:
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], e)
        else:
            spans.append((phase, e, e))
    peak = max(rows, key=lambda r: r[1])
    width = max(1, -(-len(rows) // points))
    binned = [max(rows[i : i + width], key=lambda r: r[1]) for i in range(0, len(rows), width)]
    return Timeline(
        method=trace_result.spec.method,
        points=tuple(binned),
        spans=tuple(spans),
        peak_event=peak[0],
        peak_bytes=peak[1],
        events=len(rows),
    )


def with_extras(
    data: ReportData, *, timeline: Timeline | None = None, parity: tuple[ParityRow, ...] = ()
) -> ReportData:
    return records.replace(data, timeline=timeline, parity=parity)


# -- CSV tables: every plotted number, in bytes -------------------------------------------------


def breakdown_table(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    head = ["method", "phase", "fits", "capacity_bytes", "peak_bytes", *[f"{c}_bytes" for c in CATEGORIES]]
    rows = [
        [r.method, r.phase, r.fits, data.capacity_bytes, r.peak_bytes, *[r.categories[c] for c in CATEGORIES]]
        for r in data.breakdown
    ]
    return head, rows


def scaling_table(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    head = ["method", "axis", "batch_size", "seq_len", "peak_bytes", "fit_bytes", "capacity_bytes", "fits"]
    rows = [
        [p.method, p.axis, p.batch_size, p.seq_len, p.peak_bytes, p.fit_bytes, data.capacity_bytes,
         p.fit_bytes <= data.capacity_bytes]
        for p in data.scaling
    ]  # fmt: skip
    return head, rows


def crossings_table(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    head = ["method", "axis", "max_fitting", "peak_bytes", "capacity_bytes"]
    rows = [[c.method, c.axis, c.max_fitting, c.peak_bytes, data.capacity_bytes] for c in data.crossings]
    return head, rows


def timeline_table(timeline: Timeline) -> tuple[list[str], list[list[Any]]]:
    return ["event", "live_bytes", "phase"], [list(p) for p in timeline.points]


def parity_table(rows: tuple[ParityRow, ...]) -> tuple[list[str], list[list[Any]]]:
    head = ["method", "label", "predicted_bytes", "measured_bytes", "error_pct"]
    return head, [[r.method, r.label, r.predicted_bytes, r.measured_bytes, f"{r.error_pct:.3f}"] for r in rows]
