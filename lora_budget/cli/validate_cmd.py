"""``lora-budget validate``: the planner against the trace over the validation grid."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import check_folder, write_atomic


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise LoraBudgetError(f"cannot write {path}: {exc.strerror}") from None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


@click.command("validate")
@click.option("--quick", is_flag=True, help="The small grid CI runs (GPT-2 and Qwen2.5-0.5B, one point each).")
@click.option("--models", help="Comma list of grid architectures (default: all of them).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="Folder for accuracy.md and accuracy.csv.",
)
@click.option("--fresh", is_flag=True, help="Trace every configuration again (default: keep rows already in the CSV).")
@click.option("--replan", is_flag=True, help="Keep the stored traces, plan every row again (after a planner change).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def validate_cmd(quick: bool, models: str | None, out: str, fresh: bool, replan: bool, as_json: bool) -> None:
    """Trace and plan every configuration of the validation grid; write the error table.

    OUT/accuracy.md also carries the comparison with 54 published measurements
    (OUT/published.csv), which needs no trace.

    Rows are appended to OUT/accuracy.csv as each trace finishes, so an interrupted run keeps its
    work and the next run resumes. Exits 1 when the accuracy targets are not met.

    \b
    Examples:
      lora-budget validate                       # the whole grid, about 20 minutes on 2 cores
      lora-budget validate --quick --out /tmp/v  # what CI runs
      lora-budget validate --models GPT-2,Gemma-2-2B
      lora-budget validate --replan              # re-score stored traces after a planner change
    """
    from lora_budget.validation.grid import ARCHITECTURES, grid, run
    from lora_budget.validation.grid import replan as replan_rows
    from lora_budget.validation.report import KNOWN_GAPS, accuracy_markdown, meets_targets, total_stats

    chosen = None
    if models is not None:
        chosen = tuple(m.strip() for m in models.split(",") if m.strip())
        if not chosen:  # "," or "" is a typo, not "all of them" (a 20-minute run)
            raise LoraBudgetError(f"--models {models!r} names no architecture; choose from {', '.join(ARCHITECTURES)}")
        unknown = [m for m in chosen if m not in ARCHITECTURES]
        if unknown:
            raise LoraBudgetError(f"{unknown[0]!r} is not in the grid; choose from {', '.join(ARCHITECTURES)}")
    configs = grid(quick=quick, models=chosen)
    folder = Path(out)
    check_folder(folder, ("accuracy.md", "accuracy.csv", "published.csv"))  # before minutes of tracing
    csv_path = folder / "accuracy.csv"

    def progress(i: int, n: int, config: Any, row: dict[str, Any] | None) -> None:
        if row is None:
            click.echo(
                f"[{i + 1}/{n}] {config.model} {config.method} ckpt={'on' if config.grad_ckpt else 'off'} "
                f"b={config.batch_size} s={config.seq_len} ...",
                err=True,
                nl=False,
            )
        else:
            click.echo(f" {row['error']:+.2%} ({row['trace_s']} s)", err=True)

    if replan and fresh:
        raise click.UsageError("--replan keeps the stored traces; --fresh discards them: choose one")
    if replan and csv_path.exists():
        replan_rows(csv_path)
    try:
        rows = run(configs, csv_path, resume=not fresh, progress=progress)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished rows are kept in {csv_path}", err=True)
        sys.exit(130)
    from lora_budget.validation.published import compare_published, published_csv, published_markdown

    ok, lines = meets_targets(rows)
    published = compare_published()
    text = accuracy_markdown(rows, _versions(), list(KNOWN_GAPS)) + "\n" + published_markdown(published)
    _write_atomic(folder / "accuracy.md", text)
    _write_atomic(folder / "published.csv", published_csv(published))
    if as_json:
        summary = {
            "configs": len(rows),
            "targets_met": ok,
            "by_method": [
                {"method": s.label, "configs": s.n, "median_abs_error": s.median_abs, "worst_error": s.worst}
                for s in total_stats(rows)
            ],
            "report": str(folder / "accuracy.md"),
        }
        click.echo(json.dumps(summary, indent=2))
    else:
        for s in total_stats(rows):
            click.echo(f"{s.label:<6} {s.n:>4} configs  median |error| {s.median_abs:6.2%}  worst {s.worst:+7.2%}")
        for line in lines:
            click.echo(line)
        click.echo(f"wrote {folder / 'accuracy.md'}, {csv_path} and {folder / 'published.csv'}")
    if not ok:
        sys.exit(1)
