"""The planner against peak-memory figures that torchtune, PEFT and the transformers docs published.

``data/published-memory.csv`` (54 rows, provenance in ``data/README.md``) is an independent check:
each usable row becomes a :class:`~lora_budget.spec.TrainSpec` from what the row states
(``published_map.map_row``) and the planner's peak is compared like with like:

- allocated-type figures (``torch.cuda.max_memory_allocated``, torchtune's peak active) against the
  planner's allocator-visible peak: ``peak_bytes`` less bitsandbytes paged optimizer state, which
  lives in CUDA unified memory that torch's allocator statistics never see;
- torchtune figures whose statistic the source does not name are compared the same way but
  summarised apart (a reserved figure would sit above the allocated peak);
- reserved and nvidia-smi figures include allocator reserve (and, for nvidia-smi, the CUDA
  context); the planner is not calibrated for them yet, so they get a gap in GiB, not an error.

Run ``python -m lora_budget.validation.published --out reports/`` to write ``published.md`` and
``published.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.spec import TrainSpec
from lora_budget.validation.published_map import map_row, metric_kind, null, published_bytes

DATA = Path(__file__).with_name("data") / "published-memory.csv"
COLUMNS = (
    "id source source_ref table_or_section model hf_model_id method method_detail framework "
    "frozen_weight_precision compute_precision trainable_precision optimizer lora_rank lora_alpha "
    "lora_targets trainable_params batch_size_per_gpu grad_accum seq_len seq_len_kind "
    "gradient_checkpointing attention_impl other_memory_settings num_gpus parallelism gpu memory_value "
    "memory_value_high memory_unit memory_gib memory_metric outcome reliability notes config_complete "
    "config_complete_strict"
).split()
"""The documented columns of published-memory.csv, in file order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedRow:
    """One published figure, what the planner says for it, and why the two may differ."""

    id: int
    source: str
    """torchtune, peft or transformers-docs."""
    model: str
    """The model as the source names it."""
    method: str
    batch_size: int | None
    seq_len: int | None
    grad_ckpt: str
    """yes, no, or ? where the source does not say."""
    metric: str
    """allocated, unstated, reserved or nvidia-smi (see ``published_map.metric_kind``)."""
    outcome: str
    """measured or OOM."""
    reliability: str
    gpu: str
    published_bytes: int | None
    spec: TrainSpec | None
    reasons: tuple[str, ...]
    """Why the row has no spec; empty when it has one."""
    caveats: tuple[str, ...]
    material: bool
    """A caveat changes the peak materially."""
    plan_bytes: int | None
    """The planner's peak as torch's allocator sees it: ``peak_bytes`` less paged optimizer state."""
    paged_bytes: int | None
    plan_phase: str
    gpu_fits: bool | None
    """Whether the plan fits the stated GPU (None: GPU not stated or not in the catalog)."""

    @property
    def usable(self) -> bool:
        return self.spec is not None

    @property
    def error_pct(self) -> float | None:
        """(plan - published) / published in percent, for allocated and unstated figures."""
        if self.metric not in ("allocated", "unstated") or not self.plan_bytes or not self.published_bytes:
            return None
        return 100.0 * (self.plan_bytes - self.published_bytes) / self.published_bytes

    @property
    def gap_bytes(self) -> int | None:
        """published - plan for reserved and nvidia-smi figures: allocator reserve (+ CUDA context)."""
        if self.metric not in ("reserved", "nvidia-smi") or self.plan_bytes is None or self.published_bytes is None:
            return None
        return self.published_bytes - self.plan_bytes

    @property
    def in_summary(self) -> bool:
        """Counted in the allocated-error summary: a clean allocated figure of a measured run."""
        return (
            self.usable
            and self.metric == "allocated"
            and self.outcome == "measured"
            and self.reliability != "low"
            and not self.material
        )


@dataclass(frozen=True, slots=True)
class SummaryLine:
    group: str
    method: str
    n: int
    median_abs_pct: float
    worst_abs_pct: float
    worst_id: int


def load_rows(path: Path = DATA) -> list[dict[str, str]]:
    """The CSV as dicts of strings, in file order; ``null`` stays the string ``null``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != tuple(COLUMNS):
            raise LoraBudgetError(f"{path}: columns differ from the documented ones")
        return list(reader)


def _source(text: str) -> str:
    t = text.lower()
    return "torchtune" if "torchtune" in t else "peft" if "peft" in t else "transformers-docs"


def _gpu(text: str):
    """The catalog GPU a published GPU string names, or None (``1x RTX 4090``, ``RTX 4090 24GB``)."""
    import re

    from lora_budget.catalog.gpus import resolve_gpu

    if null(text) or re.match(r"^\s*[2-9]x", text):
        return None
    t = re.sub(r"\([^)]*\)", "", re.sub(r"^\s*1x\s*", "", text)).strip()
    for candidate in (t, re.sub(r"\s*\d+GB$", "", t), t.replace("Tesla ", "").replace("-SXM2", "")):
        try:
            return resolve_gpu(candidate)
        except LoraBudgetError:
            continue
    return None


def compare_row(row: dict[str, str]) -> PublishedRow:
    from lora_budget.core.peak import peak_model

    mapped = map_row(row)
    plan = paged = None
    phase = ""
    fits = None
    if mapped.spec is not None:
        model = peak_model(mapped.spec)
        breakdown = model.breakdown(mapped.spec.batch_size, mapped.spec.seq_len)
        paged = model.static.optimizer_pageable
        plan = breakdown.peak_bytes - paged
        phase = breakdown.phase
        gpu = _gpu(row["gpu"])
        fits = None if gpu is None else plan <= gpu.memory_bytes
    ckpt = row["gradient_checkpointing"].strip().lower()
    return PublishedRow(
        id=int(row["id"]),
        source=_source(row["source"]),
        model=row["model"],
        method=row["method"],
        batch_size=None if null(row["batch_size_per_gpu"]) else int(row["batch_size_per_gpu"]),
        seq_len=None if null(row["seq_len"]) else int(row["seq_len"]),
        grad_ckpt="yes" if ckpt.startswith("true") else "no" if ckpt.startswith("false") else "?",
        metric=metric_kind(row),
        outcome=row["outcome"].strip(),
        reliability=row["reliability"].strip(),
        gpu="" if null(row["gpu"]) else row["gpu"],
        published_bytes=published_bytes(row),
        spec=mapped.spec,
        reasons=mapped.reasons,
        caveats=mapped.caveats,
        material=mapped.material,
        plan_bytes=plan,
        paged_bytes=paged,
        plan_phase=phase,
        gpu_fits=fits,
    )


def compare_published(path: Path = DATA) -> list[PublishedRow]:
    """Every row of the published data set, planned where it can be."""
    return [compare_row(row) for row in load_rows(path)]


def summarize(rows: list[PublishedRow], group: str, select) -> list[SummaryLine]:
    """Median and worst absolute error by method (and over all methods) for the selected rows."""
    chosen = [r for r in rows if select(r) and r.error_pct is not None]
    out = []
    for method in ("full", "lora", "qlora", "all"):
        mine = [r for r in chosen if method == "all" or r.method == method]
        if not mine:
            continue
        worst = max(mine, key=lambda r: abs(r.error_pct))
        out.append(
            SummaryLine(
                group=group,
                method=method,
                n=len(mine),
                median_abs_pct=statistics.median(abs(r.error_pct) for r in mine),
                worst_abs_pct=abs(worst.error_pct),
                worst_id=worst.id,
            )
        )
    return out


def summary(rows: list[PublishedRow]) -> list[SummaryLine]:
    clean_unstated = [r for r in rows if r.metric == "unstated" and r.reliability != "low" and not r.material]
    return (
        summarize(rows, "allocated, no material caveat", lambda r: r.in_summary)
        + summarize(rows, "unstated torchtune stat, no material caveat", lambda r: r in clean_unstated)
        + summarize(rows, "every mapped row, caveats included (reading only)", lambda r: r.usable)
    )


def reason_label(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def exclusion_counts(rows: list[PublishedRow]) -> Counter:
    """Unusable rows by their first reason."""
    return Counter(reason_label(r.reasons[0]) for r in rows if not r.usable)


CSV_FIELDS = (
    "id source model method batch_size seq_len grad_ckpt metric outcome reliability gpu published_bytes "
    "plan_bytes paged_bytes plan_phase error_pct gap_bytes in_summary gpu_fits spec reason caveats"
).split()


def published_csv(rows: list[PublishedRow]) -> str:
    """One line per row; bytes as integers, the spec as ``method/targets/rank/optimizer/dtype``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        err = r.error_pct
        writer.writerow(
            [
                r.id, r.source, r.model, r.method, r.batch_size or "", r.seq_len or "", r.grad_ckpt, r.metric,
                r.outcome, r.reliability, r.gpu, _or(r.published_bytes), _or(r.plan_bytes), _or(r.paged_bytes),
                r.plan_phase, "" if err is None else f"{err:.2f}", _or(r.gap_bytes), r.in_summary,
                _or(r.gpu_fits), spec_label(r.spec), "; ".join(r.reasons), "; ".join(r.caveats),
            ]
        )  # fmt: skip
    return buf.getvalue()


def _or(value) -> str:
    return "" if value is None else str(value)


def spec_label(spec: TrainSpec | None) -> str:
    if spec is None:
        return ""
    parts = [spec.model.name, spec.method, spec.dtype, spec.optimizer]
    if spec.method != "full":
        parts += [f"r{spec.rank}", spec.targets, f"adapter {spec.adapter_dtype}"]
    parts += [f"b{spec.batch_size}", f"s{spec.seq_len}", f"accum {spec.grad_accum}", spec.attn]
    parts.append("ckpt" if spec.grad_ckpt else "no ckpt")
    return " ".join(parts)


def published_markdown(rows: list[PublishedRow]) -> str:
    from lora_budget.validation.published_render import render

    return render(rows, summary(rows), exclusion_counts(rows))


def _atomic_write(path: Path, text: str) -> None:
    write_atomic(path, text)


def write(rows: list[PublishedRow], folder: Path, overwrite: bool = False) -> list[Path]:
    """Write ``published.md`` and ``published.csv`` into ``folder``, each atomically."""
    if folder.exists() and not folder.is_dir():
        raise LoraBudgetError(f"--out {folder} is a file, not a folder")
    targets = {folder / "published.md": published_markdown(rows), folder / "published.csv": published_csv(rows)}
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise LoraBudgetError(f"{existing[0]} exists; pass --overwrite to replace it, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        _atomic_write(path, text)
    return list(targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_budget.validation.published",
        description="Compare the planner with published peak-memory figures; write published.md and .csv.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for published.md and published.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace existing published.md/.csv")
    args = parser.parse_args(argv)
    try:
        paths = write(compare_published(), args.out, overwrite=args.overwrite)
    except LoraBudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
