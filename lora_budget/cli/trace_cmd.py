"""``lora-budget trace``: the real training step on fake tensors, every allocation counted."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import config_notes, spec_kwargs, spec_options
from lora_budget.errors import LoraBudgetError


class _Bar:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, where: str) -> None:
        if not self.tty:
            return
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r{self.label} [{bar:<30}] {frac:4.0%} {where:<22}"
        else:
            text = f"\r{self.label} {done:,} ops {where:<22}"
        click.echo(text, err=True, nl=False)

    def close(self, message: str) -> None:
        if message:
            click.echo(("\r" if self.tty else "") + f"{message:<80}", err=True)
        elif self.tty:
            click.echo("\r" + " " * 80 + "\r", err=True, nl=False)


@click.command("trace")
@spec_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object with a `methods` list.")
@click.option(
    "--timeline",
    "timeline_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write live bytes after every op (event, method, live_bytes, phase, step) to this CSV file.",
)
@click.option("--steps", type=int, default=1, show_default=True, help="Full steps traced after the warm start.")
@user_errors
def trace_cmd(as_json: bool, timeline_path: str | None, steps: int, **kw: Any) -> None:
    """Run the real transformers + peft + bitsandbytes step on fake tensors and count every byte.

    Builds the model from its config (random weights, nothing downloaded) on fake tensors: no GPU
    and almost no RAM. The optimizer state is created first (a warm start), then one full step is
    traced, so the peak is the steady-state step's. Prints the trace beside the plan.
    With --gpus N --strategy fsdp it traces rank 0 of N under FSDP2 (fully_shard on every decoder
    layer and the root) on a fake process group: the bytes are one GPU's.

    \b
    Examples:
      lora-budget trace --model 7b --method qlora --seq-len 2048 --batch-size 4
      lora-budget trace -m Qwen2.5-1.5B --method lora --grad-ckpt --json
      lora-budget trace -m 8b --method qlora --timeline step.csv
      lora-budget trace -m 1b --method lora --gpus 8 --strategy fsdp
    """
    from lora_budget.api import MAIN_METHODS
    from lora_budget.catalog.models import resolve_model
    from lora_budget.core.model import estimate
    from lora_budget.spec import TrainSpec

    if timeline_path:
        from lora_budget.fsio import check_destination

        check_destination(timeline_path)
        _check_replaceable(timeline_path)
    if kw["batch_size"].strip().lower() == "auto":
        raise click.BadParameter(
            "trace needs a number (use plan --batch-size auto to search)", param_hint="--batch-size"
        )
    try:
        batch = int(kw["batch_size"])
    except ValueError:
        raise click.BadParameter(f"{kw['batch_size']!r} is not a positive integer", param_hint="--batch-size") from None
    if steps < 1:
        raise click.BadParameter("must be at least 1", param_hint="--steps")
    from lora_budget.cli.options import check_real_step

    check_real_step(batch, kw["seq_len"])
    for note in config_notes():
        click.echo(f"note: {note}", err=True)
    ref = resolve_model(kw["model"])
    methods = MAIN_METHODS if kw["method"] == "all" else tuple(m.strip() for m in kw["method"].split(","))
    options = spec_kwargs(kw)
    rows = []
    for method in methods:
        opts = dict(options)
        if method != "full":
            opts.pop("master_weights", None)
        spec = TrainSpec(model=ref, method=method, batch_size=batch, **opts)
        for warning in spec.warnings:
            click.echo(f"warning: {warning}", err=True)
        if spec.attn == "flash":
            click.echo(
                "note: --attn flash is traced with SDPA's flash kernel, which keeps the same tensors as "
                "FlashAttention-2 (q, k, v, output, fp32 logsumexp)",
                err=True,
            )
        result = _run(spec, steps, keep_timeline=timeline_path is not None)
        try:
            planned = estimate(spec)
        except LoraBudgetError:
            planned = None  # activation offloading on a trace-derived model: traced, not planned
        rows.append((result, planned))
    if timeline_path:
        _write_timeline(timeline_path, rows)
    if as_json:
        click.echo(json.dumps(_to_json(ref, rows), indent=2))
    else:
        from lora_budget.cli.render_trace import render_trace

        click.echo(render_trace(ref, rows))


def _run(spec: Any, steps: int, keep_timeline: bool) -> Any:
    from lora_budget.trace.engine import trace

    bar = _Bar(f"trace {spec.method}")
    try:
        result = trace(spec, steps=steps, progress=bar, keep_timeline=keep_timeline)
    except LoraBudgetError:
        bar.close("")
        raise
    bar.close(f"traced {spec.method}: {result.ops:,} ops in {result.wall_s:.1f} s")
    return result


TIMELINE_HEADER = ("event", "method", "live_bytes", "phase", "step")


def _check_replaceable(path: str) -> None:
    """--timeline replaces an earlier timeline (or an empty file), never another file a user saved."""
    from pathlib import Path

    if not Path(path).is_file():
        return
    with open(path, "rb") as fh:
        head = fh.read(256)
    if head.strip() and not head.startswith(",".join(TIMELINE_HEADER).encode()):
        raise LoraBudgetError(
            f"--timeline {path} exists and is not a timeline CSV; not replaced (choose another path, or remove it)"
        )


def _write_timeline(path: str, rows: list[tuple[Any, Any]]) -> None:
    import csv
    import io

    from lora_budget.fsio import write_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TIMELINE_HEADER)
    for result, _ in rows:
        for event, live, phase, step in result.timeline:
            writer.writerow([event, result.spec.method, live, phase, step])
    _check_replaceable(path)
    try:
        write_atomic(path, buf.getvalue())
    except OSError as exc:
        raise LoraBudgetError(f"cannot write timeline {path}: {exc.strerror}") from None


def _to_json(ref: Any, rows: list[tuple[Any, Any]]) -> dict[str, Any]:
    from lora_budget.breakdown import CATEGORIES
    from lora_budget.core.params import param_count

    methods = []
    for result, planned in rows:
        err = None if planned is None else round((planned.peak_bytes - result.peak_bytes) / result.peak_bytes, 6)
        methods.append(
            {
                "method": result.spec.method,
                "gpus": result.spec.gpus,
                "strategy": result.spec.strategy,
                "trace": result.to_dict(),
                "plan": None
                if planned is None
                else {"peak_bytes": planned.peak_bytes, **{f"{c}_bytes": getattr(planned, c) for c in CATEGORIES}},
                "plan_error": err,
            }
        )
    return {
        "schema": "lora-budget.trace/1",
        "model": {"name": ref.name, "hf_id": ref.hf_id, "param_count": param_count(ref.shape), "source": ref.source},
        "methods": methods,
    }
