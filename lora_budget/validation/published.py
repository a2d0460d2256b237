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
from pathlib import Path

from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.spec import TrainSpec
from lora_budget.validation.published_frameworks import MECHANISM_COLUMNS, framework_key, mechanisms
from lora_budget.validation.published_map import map_row, metric_kind, null, published_bytes
from lora_budget.validation.published_render import render
from lora_budget.validation.published_rows import PublishedRow, SummaryLine

DATA = Path(__file__).with_name("data") / "published-memory.csv"
ADDED = DATA.with_name("published-memory-added.csv")
"""Rows added after the original 54: the same columns plus ``MECHANISM_COLUMNS``."""
COLUMNS = (
    "id source source_ref table_or_section model hf_model_id method method_detail framework "
    "frozen_weight_precision compute_precision trainable_precision optimizer lora_rank lora_alpha "
    "lora_targets trainable_params batch_size_per_gpu grad_accum seq_len seq_len_kind "
    "gradient_checkpointing attention_impl other_memory_settings num_gpus parallelism gpu memory_value "
    "memory_value_high memory_unit memory_gib memory_metric outcome reliability notes config_complete "
    "config_complete_strict"
).split()
"""The documented columns of published-memory.csv, in file order."""


def load_rows(path: Path = DATA, added: Path | None = ADDED) -> list[dict[str, str]]:
    """The original CSV then the added one, as dicts of strings in file order; ``null`` stays the
    string ``null``, and an original row gets ``null`` for every mechanism column."""
    rows = _read(path, tuple(COLUMNS))
    for row in rows:
        row.update({c: "null" for c in MECHANISM_COLUMNS if c not in row})
    if added is not None:
        rows += _read(added, tuple(COLUMNS) + MECHANISM_COLUMNS)
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise LoraBudgetError(f"{path}: row ids repeat across the published files")
    return rows


def _read(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != columns:
            raise LoraBudgetError(f"{path}: columns differ from the documented ones")
        return list(reader)


def _source(text: str) -> str:
    t = text.lower()
    if "litgpt" in t:
        return "litgpt"
    if "fms-acceleration" in t:
        return "fms-acceleration"
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
    from lora_budget.core.model import peak_model

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
        framework=framework_key(row),
        mechanisms=mechanisms(row),
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


def compare_published(path: Path = DATA, added: Path | None = ADDED) -> list[PublishedRow]:
    """Every row of the published data set, planned where it can be."""
    return [compare_row(row) for row in load_rows(path, added)]


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
                median_pct=statistics.median(r.error_pct for r in mine),
                within_10=sum(abs(r.error_pct) <= 10.0 for r in mine) / len(mine),
            )
        )
    return out


def allocated_measured(r: PublishedRow) -> bool:
    """A mapped, measured allocated-type figure, caveats included: what a user comparing would see
    (rows whose source contradicts itself, reliability low, left out)."""
    return r.usable and r.metric == "allocated" and r.outcome == "measured" and r.reliability != "low"


def framework_summary(rows: list[PublishedRow]) -> tuple[list[SummaryLine], list[SummaryLine]]:
    """Per framework and method: (every mapped measured allocated row, caveats included; the clean ones)."""
    frameworks = sorted({r.framework for r in rows})
    every = [
        line
        for fw in frameworks
        for line in summarize(rows, fw, lambda r, fw=fw: r.framework == fw and allocated_measured(r))
    ]
    every += summarize(rows, "all frameworks", allocated_measured)
    clean = [
        line for fw in frameworks for line in summarize(rows, fw, lambda r, fw=fw: r.framework == fw and r.in_summary)
    ]
    clean += summarize(rows, "all frameworks", lambda r: r.in_summary)
    return every, clean


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
    "id source framework model method batch_size seq_len grad_ckpt metric outcome reliability gpu published_bytes "
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
                r.id, r.source, r.framework, r.model, r.method, r.batch_size or "", r.seq_len or "", r.grad_ckpt,
                r.metric, r.outcome, r.reliability, r.gpu, _or(r.published_bytes), _or(r.plan_bytes),
                _or(r.paged_bytes), r.plan_phase, "" if err is None else f"{err:.2f}", _or(r.gap_bytes), r.in_summary,
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
    return render(rows, summary(rows), exclusion_counts(rows), framework_summary(rows))


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
