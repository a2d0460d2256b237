"""report.md: the figures, a caption for each, and the numbers behind them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lora_budget import __version__
from lora_budget.breakdown import CATEGORIES
from lora_budget.report.data import ReportData
from lora_budget.report.style import method_label
from lora_budget.units import GiB


def _embed(paths: Sequence[Path], alt: str) -> str:
    """An image link to the PNG (or SVG), and links to the other formats."""
    by_ext = {p.suffix[1:]: p.name for p in paths}
    shown = by_ext.get("png") or by_ext.get("svg")
    others = ", ".join(f"[{ext.upper()}]({name})" for ext, name in by_ext.items() if name != shown)
    line = f"![{alt}]({shown})" if shown else ""
    return line + (f"\n\n{'Also as ' if shown else 'Figure: '}{others}." if others else "")


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.2f}"


def _per_gpu(data: ReportData) -> str:
    gpus = data.plan.methods[0].spec.gpus
    return f" on each of {gpus} GPUs" if gpus > 1 else ""


def render_report(
    data: ReportData, figures: dict[str, tuple[Path, ...]], csv_files: Sequence[str], *, pareto: Any = None
) -> str:
    rows = data.breakdown
    cap = data.capacity_bytes
    out = [
        f"# {data.model_name} on {data.gpu_name}: memory report",
        "",
        f"GPU capacity {_gib(cap)} GiB ({cap:,} bytes). Step: {data.settings}.",
        f"Engine: plan (analytical), lora-budget {__version__}. GiB = 2^30 bytes. "
        "Peaks are the bytes PyTorch allocates for tensors; the CUDA context and allocator fragmentation come on top.",
        "",
        "## Peak memory by category",
        "",
        _embed(figures["breakdown"], "stacked bars of peak memory per method"),
        "",
        f"*Figure 1. Peak memory of one training step of {data.model_name}{_per_gpu(data)} per method, stacked "
        f"by memory category; the dashed line is the GPU's capacity ({_gib(cap)} GiB).*",
        "",
        "| memory (GiB) | " + " | ".join(method_label(r.method) for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for cat in CATEGORIES:
        if any(r.categories[cat] for r in rows):
            out.append(f"| {cat} | " + " | ".join(_gib(r.categories[cat]) for r in rows) + " |")
    out += [
        "| **peak** | " + " | ".join(f"**{_gib(r.peak_bytes)}**" for r in rows) + " |",
        "| peak bytes | " + " | ".join(f"{r.peak_bytes:,}" for r in rows) + " |",
        "| peak during | " + " | ".join(r.phase for r in rows) + " |",
        "| fits | " + " | ".join("yes" if r.fits else "no" for r in rows) + " |",
        "",
        "## Scaling with sequence length and micro-batch",
        "",
        _embed(figures["scaling_seq_len"], "peak memory against sequence length"),
        "",
        _embed(figures["scaling_batch"], "peak memory against micro-batch size"),
        "",
        "*Figures 2 and 3. Peak memory against sequence length (at the step's micro-batch) and against "
        "micro-batch (at the step's sequence length); stars mark the largest value that fits the GPU.*",
        "",
        "| method | longest sequence that fits | peak there (GiB) | largest micro-batch that fits | peak there (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        seq = next(c for c in data.crossings if c.method == r.method and c.axis == "seq_len")
        bat = next(c for c in data.crossings if c.method == r.method and c.axis == "batch_size")
        cells = [
            str(c.max_fitting or "none") + " | " + (_gib(c.peak_bytes) if c.max_fitting else "-") for c in (seq, bat)
        ]
        out.append(f"| {method_label(r.method)} | {cells[0]} | {cells[1]} |")
    n = 4
    if data.timeline is not None:
        t = data.timeline
        spans = ", ".join(f"{phase} {start:,}-{end:,}" for phase, start, end in t.spans)
        out += [
            "",
            "## Memory timeline of one step (trace)",
            "",
            _embed(figures["timeline"], "live memory over one training step"),
            "",
            f"*Figure {n}. Live tensor memory after each of the {t.events:,} ops of one {method_label(t.method)} "
            f"step, traced on fake tensors by the real transformers/peft/bitsandbytes code; phases shaded, "
            f"peak marked ({_gib(t.peak_bytes)} GiB at op {t.peak_event:,}).*",
            "",
            f"Phases (op ranges): {spans}. The figure keeps the maximum of each of {len(t.points):,} bins, "
            "so the peak drawn is the true peak.",
        ]
        n += 1
    if data.parity:
        out += [
            "",
            "## Predicted vs measured",
            "",
            _embed(figures["parity"], "predicted against measured peak memory"),
            "",
            _embed(figures["error"], "prediction error by method"),
            "",
            f"*Figures {n} and {n + 1}. Predicted against measured peak memory, with the ±5 % band, and the "
            "signed error per method (bar: median).*",
            "",
            "| method | label | predicted (GiB) | measured (GiB) | error |",
            "|---|---|---:|---:|---:|",
        ]
        for p in data.parity:
            out.append(
                f"| {method_label(p.method)} | {p.label} | {_gib(p.predicted_bytes)} | {_gib(p.measured_bytes)} "
                f"| {p.error_pct:+.2f} % |"
            )
    if pareto is not None:
        out += _pareto_section(pareto, figures["pareto"], n + (2 if data.parity else 0))
    out += [
        "",
        "## Data",
        "",
        "Every plotted number, in bytes, to redraw any figure: " + ", ".join(f"[{f}]({f})" for f in csv_files) + ".",
        "",
    ]
    return "\n".join(out)


def _pareto_section(pareto: Any, paths: tuple[Path, ...], n: int) -> list[str]:
    """The search's front: the figure, its caption, and one row per set-up on it."""
    money = "cost (USD)" if pareto.by_cost else "GPU-hours"
    out = [
        "",
        "## Cheapest and fastest set-ups (search)",
        "",
        _embed(paths, "cost against wall time of every fitting set-up, the Pareto front marked"),
        "",
        f"*Figure {n}. {money.split(' ')[0].capitalize()} against wall time for {pareto.total_tokens:,} training "
        f"tokens: every fitting set-up `lora-budget search` timed (grey, {len(pareto.setups):,}) and its Pareto "
        "front (marker: method, colour: GPU type), on log axes.*",
        "",
        f"| wall hours | {money} | GPUs | method | strategy | optimizer | micro-batch x accumulation | ckpt |",
        "|---:|---:|---|---|---|---|---|---|",
    ]
    for s in pareto.front:
        p = s.spec
        value = f"{s.cost_usd:,.2f}" if pareto.by_cost else f"{s.gpu_hours:,.1f}"
        method = method_label(p.method) + ("" if p.method == "full" else f" r{p.rank}")
        out.append(
            f"| {s.hours:,.2f} | {value} | {p.gpus}x {s.gpu.name} | {method} | {p.strategy} | {p.optimizer} "
            f"| {p.batch_size} x {p.grad_accum} | {'yes' if p.grad_ckpt else 'no'} |"
        )
    out += ["", *(f"Note: {note}." for note in pareto.notes)]
    return out
