"""``lora-budget report``: figures, CSV and a Markdown report for a paper or a README."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import parse_batch, spec_kwargs, spec_options
from lora_budget.spec import METHODS


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.strip().split("/")[-1].removesuffix(".json")).strip("-") or "report"


@click.command("report")
@spec_options
@click.option("--gpu", "-g", default="24GB", show_default=True, help="Card name or size (24GB, 24GiB).")
@click.option("--out", "-o", default=None, help="Report folder [default: reports/MODEL-GPU].")
@click.option("--format", "formats", default="png,svg", show_default=True, help="Comma list of png, svg, pdf.")
@click.option(
    "--trace",
    "trace_method",
    type=click.Choice(METHODS),
    default=None,
    help="Also trace one step of this method (needs torch) and draw its memory timeline.",
)
@click.option(
    "--profiles",
    multiple=True,
    metavar="PATH",
    help="JSON files or folders of predicted/measured rows for the parity figures (repeatable; "
    "shape in lora_budget/report/profiles.py).",
)
@click.option(
    "--tokens",
    default=None,
    help="Tokens to train on in total, e.g. 1B: adds the cost-vs-time figure of `lora-budget search` (Pareto front).",
)
@click.option("--gpus-available", default=None, help='With --tokens: the cards searched, e.g. "8x h100, 4x l40s".')
@click.option("--price", "prices", multiple=True, help="With --tokens: card=USD per GPU-hour, repeatable.")
@click.option("--overwrite", is_flag=True, help="Replace a report already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files and key numbers as JSON.")
@user_errors
def report_cmd(
    gpu: str,
    out: str | None,
    formats: str,
    trace_method: str | None,
    profiles: tuple[str, ...],
    tokens: str | None,
    gpus_available: str | None,
    prices: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Draw the memory breakdown, scaling curves (and a traced timeline, predicted vs measured)
    as paper-ready figures, with report.md and the CSV of every plotted number.

    \b
    Examples:
      lora-budget report --model 7b --gpu 24GB
      lora-budget report -m 8b -g rtx4090 --method lora,qlora --format png,svg,pdf --out reports/8b-4090
      lora-budget report -m 7b -g 24GB --trace qlora --overwrite
      lora-budget report -m 7b -g a100-80gb --profiles profiles/a100/
      lora-budget report -m 70b -g h100 --tokens 1B --gpus-available "8x h100, 4x l40s" --price h100=2.5
    """
    from lora_budget.report.data import gather, timeline_from_trace, with_extras
    from lora_budget.report.writer import parse_formats, write_report

    started = time.perf_counter()
    fmts = parse_formats(formats)
    folder = out or f"reports/{_slug(kw['model'])}-{_slug(gpu)}"
    _check_out(folder, fmts, overwrite)
    data = gather(kw["model"], gpu, kw["method"], batch_size=parse_batch(kw["batch_size"]), **spec_kwargs(kw))
    parity: tuple = ()
    if profiles:
        from lora_budget.report.profiles import _rows_from_profiles

        parity = tuple(_rows_from_profiles(profiles))
    timeline = None
    if trace_method:
        timeline = timeline_from_trace(_run_trace(data, trace_method))
    data = with_extras(data, timeline=timeline, parity=parity)
    front = _search(kw, tokens, gpus_available, prices) if tokens is not None else None
    written = write_report(data, folder, fmts, overwrite=overwrite, pareto=front)
    wall_s = time.perf_counter() - started
    if as_json:
        click.echo(
            json.dumps(
                {
                    "folder": str(written.folder),
                    "files": [str(p) for p in written.files],
                    "capacity_bytes": data.capacity_bytes,
                    "methods": [
                        {"method": r.method, "peak_bytes": r.peak_bytes, "fits": r.fits, "phase": r.phase}
                        for r in data.breakdown
                    ],
                    "wall_s": round(wall_s, 3),
                },
                indent=2,
            )
        )
        return
    click.echo(f"report: {written.folder / 'report.md'}")
    for stem, paths in written.figures.items():
        click.echo(f"  {stem:<16}" + "  ".join(p.name for p in paths))
    click.echo(f"  {'data':<16}" + "  ".join(p.name for p in written.files if p.suffix == ".csv"))
    click.echo(f"{len(written.files)} files in {wall_s:.1f} s")


def _check_out(folder: str, fmts: tuple[str, ...], overwrite: bool) -> None:
    """Vet --out before planning, tracing or drawing: a folder (or one that can be made), no report
    in it unless --overwrite, and no FIFO, device or folder where a figure, CSV or report.md goes."""
    from pathlib import Path

    from lora_budget.errors import LoraBudgetError
    from lora_budget.fsio import check_folder
    from lora_budget.report.writer import REPORT_FILE

    suffixes = {".csv", *(f".{f}" for f in fmts)}
    given = Path(folder)
    names = ()
    if given.is_dir():
        names = tuple(p.name for p in given.iterdir() if p.name == REPORT_FILE or p.suffix in suffixes)
    check_folder(given, names)
    if (given / REPORT_FILE).exists() and not overwrite:
        raise LoraBudgetError(
            f"{folder} already holds a report; pass --overwrite to replace it, or choose another --out"
        )


def _search(kw: dict[str, Any], tokens: str, gpus_available: str | None, prices: tuple[str, ...]) -> Any:
    """``lora-budget search`` over the report's model and methods at its sequence length."""
    from lora_budget.cli.options import parse_count
    from lora_budget.report.pareto import pareto_data
    from lora_budget.search.run import run_search

    total = parse_count(tokens, "--tokens")
    if total <= 0:
        raise click.BadParameter(f"must be positive, got {tokens}", param_hint="--tokens")
    click.echo(f"searching set-ups for {total:,} tokens...", err=True)
    found = run_search(
        kw["model"], total, methods=kw["method"], gpus_available=gpus_available, prices=prices, seq_len=kw["seq_len"]
    )
    if not found.result.setups:
        raise click.UsageError(
            "--tokens: no set-up of the searched space fits with a speed estimate (a card needs a 16-bit "
            "throughput figure); widen --gpus-available"
        )
    return pareto_data(found.result, total, by_cost=found.priced)


def _run_trace(data: Any, method: str) -> Any:
    from lora_budget import records

    try:
        spec = next(m.spec for m in data.plan.methods if m.method == method)
    except StopIteration:
        first = data.plan.methods[0].spec
        options = {"master_weights": False} if method != "full" else {}
        spec = records.replace(first, method=method, **options)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.UsageError("--trace needs torch: pip install 'lora-budget[torch]'") from None
    from lora_budget.trace.engine import trace

    click.echo(f"tracing one {method} step of {spec.model.name} on fake tensors...", err=True)
    result = trace(spec, keep_timeline=True)
    click.echo(f"traced {result.ops:,} ops in {result.wall_s:.1f} s", err=True)
    return result
