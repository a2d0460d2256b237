"""Write a report folder: figures, one CSV per figure (every plotted number, in bytes), report.md.

Every file is written atomically (temp file + os.replace). A folder that already holds a report
is replaced only when the caller says so (``overwrite=True``): nothing a user saved is lost silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.records import dataclass
from lora_budget.report import data as D
from lora_budget.report import figures as F
from lora_budget.report.markdown import render_report
from lora_budget.report.style import method_label

REPORT_FILE = "report.md"


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenReport:
    folder: Path
    files: tuple[Path, ...]
    figures: dict[str, tuple[Path, ...]]
    """Figure stem -> its files, one per format."""


def _atomic_write(path: Path, text: str) -> None:
    write_atomic(path, text)


def _csv(head: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    writer.writerows(rows)
    return buf.getvalue()


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in F.FORMATS]
    if bad or not formats:
        raise LoraBudgetError(f"--format {text!r}: choose from {', '.join(F.FORMATS)} (comma list, e.g. png,svg)")
    return formats


def write_report(
    data: D.ReportData,
    folder: str | Path,
    formats: Sequence[str],
    *,
    overwrite: bool = False,
    pareto: Any = None,
) -> WrittenReport:
    """``pareto``: a ``report.pareto.ParetoData`` (a ``search``) adds the cost-vs-time figure."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LoraBudgetError(f"--out {folder} is a file, not a folder; choose another --out")
    if (folder / REPORT_FILE).exists() and not overwrite:
        raise LoraBudgetError(
            f"{folder} already holds a report; pass --overwrite to replace it, or choose another --out"
        )
    folder.mkdir(parents=True, exist_ok=True)
    cap_label = f"{data.capacity_bytes / 2**30:.2f} GiB"
    where = f"{data.model_name}, {data.settings}"
    figures: dict[str, tuple[Path, ...]] = {}
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    fig = F.breakdown_figure(data.breakdown, data.capacity_bytes, cap_label, f"Peak memory by category: {where}")
    figures["breakdown"] = tuple(F.save(fig, folder, "breakdown", formats))
    tables["breakdown"] = D.breakdown_table(data)

    for axis, stem, noun in (
        ("seq_len", "scaling_seq_len", "sequence length"),
        ("batch_size", "scaling_batch", "micro-batch"),
    ):
        fig = F.scaling_figure(
            data.scaling, data.crossings, data.capacity_bytes, cap_label, axis,
            f"Peak memory vs {noun}: {data.model_name}",
        )  # fmt: skip
        figures[stem] = tuple(F.save(fig, folder, stem, formats))
    tables["scaling"] = D.scaling_table(data)
    tables["crossings"] = D.crossings_table(data)

    if data.timeline is not None:
        t = data.timeline
        title = f"Live memory during one {method_label(t.method)} step (trace): {data.model_name}"
        fig = F.timeline_figure(t, title, data.capacity_bytes, cap_label)
        figures["timeline"] = tuple(F.save(fig, folder, "timeline", formats))
        tables["timeline"] = D.timeline_table(t)

    if data.parity:
        fig = F.parity_figure(data.parity, "Predicted vs measured peak memory")
        figures["parity"] = tuple(F.save(fig, folder, "parity", formats))
        fig = F.error_figure(data.parity, "Prediction error by method")
        figures["error"] = tuple(F.save(fig, folder, "error", formats))
        tables["parity"] = D.parity_table(data.parity)

    if pareto is not None:
        from lora_budget.report import pareto as P

        money = "cost" if pareto.by_cost else "GPU-hours"
        fig = P.pareto_figure(
            pareto, f"{money.capitalize()} vs wall time: {data.model_name}, {P.token_count(pareto.total_tokens)} tokens"
        )
        figures["pareto"] = tuple(F.save(fig, folder, "pareto", formats))
        tables["pareto"] = P.pareto_table(pareto)

    files = [p for paths in figures.values() for p in paths]
    for name, (head, rows) in tables.items():
        path = folder / f"{name}.csv"
        _atomic_write(path, _csv(head, rows))
        files.append(path)
    report = folder / REPORT_FILE
    _atomic_write(report, render_report(data, figures, sorted(f"{n}.csv" for n in tables), pareto=pareto))
    files.append(report)
    return WrittenReport(folder=folder, files=tuple(files), figures=figures)
