"""Paper-ready figures: each function takes plain data and returns a matplotlib ``Figure``.

matplotlib is imported inside the functions; figures are built with ``matplotlib.figure.Figure``
(never pyplot), so nothing here changes a user's global backend, and rendering is Agg's.
Every figure is one column wide (3.5 in), uses constrained layout (labels never overlap or clip),
keeps its legend outside the data, and labels every axis with its unit (GiB = 2^30 bytes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lora_budget.breakdown import CATEGORIES
from lora_budget.fsio import check_destination
from lora_budget.report.data import BreakdownRow, Crossing, ParityRow, ScalingPoint, Timeline
from lora_budget.report.style import (
    CATEGORY_STYLE,
    COLUMN_WIDTH_IN,
    PHASE_SHADE,
    RC,
    method_label,
    method_style,
    wrap_title,
)
from lora_budget.units import GiB

FORMATS = ("png", "svg", "pdf")
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
"""No timestamps in the files: the same numbers give the same bytes, so committed figures diff cleanly."""


@contextlib.contextmanager
def _style() -> Iterator[Any]:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        from lora_budget.errors import LoraBudgetError

        raise LoraBudgetError("figures need matplotlib: pip install 'lora-budget[report]'") from None
    with matplotlib.rc_context(RC):
        yield Figure


def _figure(height_in: float) -> Any:
    with _style() as Figure:
        return Figure(figsize=(COLUMN_WIDTH_IN, height_in), layout="constrained")


def _capacity(ax: Any, capacity_bytes: int, label: str) -> Any:
    return ax.axhline(capacity_bytes / GiB, color="black", linestyle=(0, (4, 2)), linewidth=0.9, label=label)


def breakdown_figure(rows: Sequence[BreakdownRow], capacity_bytes: int, capacity_label: str, title: str) -> Any:
    """One stacked bar per method, one fixed colour per category, the GPU's capacity as a line."""
    with _style():
        fig = _figure(3.3)
        ax = fig.add_subplot()
        used = [c for c in CATEGORIES if any(r.categories[c] for r in rows)]
        xs = range(len(rows))
        bottoms = [0.0] * len(rows)
        for cat in used:
            colour, hatch = CATEGORY_STYLE[cat]
            heights = [r.categories[cat] / GiB for r in rows]
            ax.bar(
                xs,
                heights,
                bottom=bottoms,
                width=0.6,
                color=colour,
                hatch=hatch,
                edgecolor="white" if not hatch else "#555555",
                linewidth=0.3,
                label=cat.replace("_", " "),
            )
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        _capacity(ax, capacity_bytes, f"GPU capacity, {capacity_label}")
        top = max([*bottoms, capacity_bytes / GiB])
        for x, total in zip(xs, bottoms, strict=True):
            ax.text(
                x,
                total + 0.02 * top,
                f"{total:.2f} GiB",
                ha="center",
                va="bottom",
                fontsize=6.5,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            )
        ax.set_ylim(0, top * 1.12)
        ax.set_xticks(list(xs), [f"{method_label(r.method)}\n{'fits' if r.fits else 'does not fit'}" for r in rows])
        ax.set_ylabel("peak memory (GiB)")
        ax.set_title(wrap_title(title))
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles[::-1], labels[::-1], loc="outside lower center", ncol=2, frameon=False)
    return fig


def scaling_figure(
    points: Sequence[ScalingPoint],
    crossings: Sequence[Crossing],
    capacity_bytes: int,
    capacity_label: str,
    axis: str,
    title: str,
) -> Any:
    """Peak memory against sequence length or micro-batch, per method; the largest value that fits
    is marked with a star where the curve meets the capacity line."""
    with _style():
        fig = _figure(3.0)
        ax = fig.add_subplot()
        methods = list(dict.fromkeys(p.method for p in points if p.axis == axis))
        cap = capacity_bytes / GiB
        lowest_peak = 0.0
        for method in methods:
            colour, marker, dash = method_style(method)
            curve = sorted((p.x, p.peak_bytes / GiB) for p in points if p.axis == axis and p.method == method)
            lowest_peak = max(lowest_peak, curve[0][1])
            cross = next((c for c in crossings if c.method == method and c.axis == axis), None)
            noun = "seq" if axis == "seq_len" else "batch"
            if cross is None:
                label = method_label(method)
            elif cross.max_fitting:
                label = f"{method_label(method)}: fits up to {noun} {cross.max_fitting:,}"
            else:
                label = f"{method_label(method)}: does not fit"
            ax.plot(*zip(*curve, strict=True), color=colour, linestyle=dash, label=label)
            if cross is not None and cross.max_fitting:
                ax.plot(
                    [cross.max_fitting],
                    [cross.peak_bytes / GiB],
                    marker="*",
                    markersize=8,
                    color=colour,
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                    linestyle="none",
                )
        _capacity(ax, capacity_bytes, f"GPU capacity, {capacity_label}")
        ax.set_ylim(0, max(1.6 * cap, 1.1 * lowest_peak))
        if axis == "seq_len":
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length (tokens)")
        else:
            xs = [p.x for p in points if p.axis == axis]
            if max(xs) > 64:
                ax.set_xscale("log", base=2)
            ax.set_xlabel("micro-batch size (sequences)")
        ax.xaxis.set_major_formatter("{x:,.0f}")
        ax.set_ylabel("peak memory (GiB)")
        ax.set_title(wrap_title(title))
        ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
        fig.legend(loc="outside lower center", ncol=1, frameon=False)
    return fig


def timeline_figure(timeline: Timeline, title: str, capacity_bytes: int | None = None, capacity_label: str = "") -> Any:
    """Live bytes after each op of one training step, phases shaded, the peak marked."""
    with _style():
        fig = _figure(2.9)
        ax = fig.add_subplot()
        shown: set[str] = set()
        for phase, start, end in timeline.spans:
            ax.axvspan(
                start,
                end + 1,
                color=PHASE_SHADE.get(phase, "#99999922"),
                linewidth=0,
                label=phase if phase not in shown else None,
            )
            shown.add(phase)
        xs = [p[0] for p in timeline.points]
        ys = [p[1] / GiB for p in timeline.points]
        ax.plot(xs, ys, color="black", linewidth=0.8, label="live tensors")
        ax.plot(
            [timeline.peak_event],
            [timeline.peak_bytes / GiB],
            marker="*",
            markersize=8,
            color="#D55E00",
            markeredgecolor="black",
            markeredgewidth=0.5,
            linestyle="none",
            label=f"peak {timeline.peak_bytes / GiB:.2f} GiB",
        )
        top = timeline.peak_bytes / GiB
        if capacity_bytes and capacity_bytes / GiB < 1.6 * top:
            _capacity(ax, capacity_bytes, f"GPU capacity, {capacity_label}")
            top = max(top, capacity_bytes / GiB)
        ax.set_ylim(0, top * 1.1)
        ax.set_xlim(0, timeline.events)
        ax.xaxis.set_major_formatter("{x:,.0f}")
        ax.set_xlabel("op (aten call) within the step")
        ax.set_ylabel("live memory (GiB)")
        ax.set_title(wrap_title(title))
        fig.legend(loc="outside lower center", ncol=3, frameon=False)
    return fig


def _parity_rows(rows: Iterable[ParityRow | tuple[str, int, int]]) -> list[ParityRow]:
    return [
        r if isinstance(r, ParityRow) else ParityRow(method=r[0], predicted_bytes=int(r[1]), measured_bytes=int(r[2]))
        for r in rows
    ]


def parity_figure(rows: Iterable[ParityRow | tuple[str, int, int]], title: str, band_pct: float = 5.0) -> Any:
    """Predicted against measured peak, the y = x line and its +/- band, one marker per method."""
    data = _parity_rows(rows)
    if not data:
        raise ValueError("parity_figure needs at least one (method, predicted, measured) row")
    with _style():
        fig = _figure(3.4)
        ax = fig.add_subplot()
        values = [v / GiB for r in data for v in (r.predicted_bytes, r.measured_bytes)]
        lo, hi = min(values) * 0.9, max(values) * 1.1
        k = band_pct / 100
        ax.fill_between([lo, hi], [lo * (1 - k), hi * (1 - k)], [lo * (1 + k), hi * (1 + k)],
                        color="#99999944", linewidth=0, label=f"±{band_pct:g} %")  # fmt: skip
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.7, label="predicted = measured")
        for method in dict.fromkeys(r.method for r in data):
            colour, marker, _ = method_style(method)
            pts = [(r.measured_bytes / GiB, r.predicted_bytes / GiB) for r in data if r.method == method]
            ax.plot(*zip(*pts, strict=True), marker=marker, color=colour, linestyle="none", label=method_label(method))
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("measured peak (GiB)")
        ax.set_ylabel("predicted peak (GiB)")
        ax.set_title(wrap_title(title))
        fig.legend(loc="outside lower center", ncol=3, frameon=False)
    return fig


def error_figure(rows: Iterable[ParityRow | tuple[str, int, int]], title: str, band_pct: float = 5.0) -> Any:
    """Signed prediction error per method: one dot per row, a bar at the median, the +/- band."""
    data = _parity_rows(rows)
    if not data:
        raise ValueError("error_figure needs at least one (method, predicted, measured) row")
    with _style():
        fig = _figure(2.6)
        ax = fig.add_subplot()
        methods = list(dict.fromkeys(r.method for r in data))
        ax.axhspan(-band_pct, band_pct, color="#99999933", linewidth=0, label=f"±{band_pct:g} %")
        ax.axhline(0, color="black", linewidth=0.6)
        for i, method in enumerate(methods):
            colour, marker, _ = method_style(method)
            errs = sorted(r.error_pct for r in data if r.method == method)
            median = errs[len(errs) // 2] if len(errs) % 2 else (errs[len(errs) // 2 - 1] + errs[len(errs) // 2]) / 2
            ax.plot([i] * len(errs), errs, marker=marker, color=colour, linestyle="none", alpha=0.8)
            ax.plot([i - 0.25, i + 0.25], [median, median], color=colour, linewidth=1.6)
        worst = max(abs(r.error_pct) for r in data)
        ax.set_ylim(-max(2 * band_pct, 1.2 * worst), max(2 * band_pct, 1.2 * worst))
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel("(predicted − measured) / measured (%)")
        ax.set_title(wrap_title(title))
        ax.legend(loc="upper right", frameon=False)
    return fig


def save(fig: Any, folder: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Write ``folder/stem.<fmt>`` for each format, each atomically (temp file + os.replace)."""
    out = []
    with _style():
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            target = check_destination(path)  # a symlink is written through; a FIFO or device refused
            tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
            try:
                fig.savefig(tmp, format=fmt, metadata=_METADATA[fmt])
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            out.append(path)
    return out
