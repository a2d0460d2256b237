"""``lora-budget check``: a CI gate that fails when a training step's memory grew past its baseline."""

from __future__ import annotations

import json
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import spec_kwargs, spec_options
from lora_budget.units import GiB


def _gib(nbytes: int, sign: bool = False) -> str:
    return f"{nbytes / GiB:+.2f} GiB" if sign else f"{nbytes / GiB:.2f} GiB"


@click.command("check")
@spec_options
@click.option("--baseline", required=True, metavar="FILE", help="Baseline JSON (commit it next to your code).")
@click.option(
    "--engine",
    type=click.Choice(["plan", "trace", "profile"]),
    default="plan",
    show_default=True,
    help="plan: analytical, instant; trace: fake-tensor dry run of the real model (needs torch); profile: "
    "real training steps on --device, each method in a fresh process (needs torch).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="--engine profile: where the steps run (auto: cuda when PyTorch sees a GPU, else cpu).",
)
@click.option(
    "--tolerance",
    type=float,
    default=1.0,
    show_default=True,
    metavar="PCT",
    help="Allowed growth of the peak, percent of the baseline (resolution 0.01).",
)
@click.option("--update-baseline", is_flag=True, help="Write (or create) the baseline from this run and pass.")
@click.option("--json", "as_json", is_flag=True, help="Comparisons as JSON.")
@user_errors
def check_cmd(
    baseline: str, engine: str, device: str, tolerance: float, update_baseline: bool, as_json: bool, **kw: Any
) -> None:
    """Compare a spec's peak memory with a committed baseline: exit 0 within tolerance, 1 when it
    grew beyond it (with the category that grew), 2 on bad input.

    \b
    Examples:
      lora-budget check --baseline memory.json -m 7b --method lora --update-baseline
      lora-budget check --baseline memory.json -m 7b --method lora
      lora-budget check --baseline memory.json -m ./config.json --method qlora --seq-len 4096 --tolerance 0.5
      lora-budget check --baseline trace.json -m 7b --method qlora --engine trace
      lora-budget check --baseline gpu.json -m ./config.json --method lora -b 4 --engine profile --device cuda
    """
    from lora_budget.api import MAIN_METHODS
    from lora_budget.catalog.models import resolve_model
    from lora_budget.gate import check_inputs, compare, load_baseline, measure, write_baseline
    from lora_budget.spec import TrainSpec
    from lora_budget.units import finite_number

    tolerance = finite_number(tolerance, "--tolerance", high=1e6, low_open=False)
    if kw["batch_size"].strip().lower() == "auto":
        raise click.UsageError("check needs a fixed --batch-size (auto depends on the GPU); pass e.g. --batch-size 4")
    from lora_budget.cli.options import check_real_step, parse_batch

    batch = parse_batch(kw["batch_size"])
    if engine in ("trace", "profile"):
        check_real_step(batch, kw["seq_len"])
    ref = resolve_model(kw["model"])
    methods = MAIN_METHODS if kw["method"] == "all" else tuple(m.strip() for m in kw["method"].split(","))
    specs = []
    for method in methods:
        options = spec_kwargs(kw)
        if method != "full":
            options.pop("master_weights")
        specs.append(TrainSpec(model=ref, method=method, batch_size=batch, **options))
    base = None
    if not update_baseline:  # a bad baseline fails before minutes of measuring, not after
        base = load_baseline(baseline)
        check_inputs(base, engine, tolerance, baseline)
    else:  # an unwritable baseline fails before measuring, too
        from lora_budget.fsio import check_destination
        from lora_budget.gate import check_replaceable

        check_destination(baseline)
        check_replaceable(baseline)
    if engine in ("trace", "profile"):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise click.UsageError(f"--engine {engine} needs torch: pip install 'lora-budget[torch]'") from None
        where = "cuda if present, else cpu" if device == "auto" else device
        what = "on fake tensors" if engine == "trace" else f"for real on {where} (a fresh process each)"
        click.echo(f"running {len(specs)} step(s) {what}...", err=True)
    try:
        current = measure(specs, engine, device=device)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing compared, the baseline is untouched", err=True)
        raise SystemExit(130) from None
    if update_baseline:
        write_baseline(baseline, current)
        if as_json:
            click.echo(json.dumps({"status": "updated", "baseline": current.to_dict()}, indent=2))
            return
        on = f" on {current.device}" if current.device else ""
        for e in current.entries:
            click.echo(f"baseline {baseline}: {e.method} {_gib(e.peak_bytes)} ({e.peak_bytes:,} bytes) [{engine}{on}]")
        return
    assert base is not None
    comparisons = compare(base, current, tolerance, baseline)
    failed = [c for c in comparisons if c.regressed]
    if as_json:
        rows = [
            {
                "method": c.method,
                "status": c.status,
                "baseline_bytes": c.baseline_bytes,
                "current_bytes": c.current_bytes,
                "delta_bytes": c.delta_bytes,
                "delta_pct": round(c.delta_pct, 4),
                "category_delta_bytes": c.category_deltas,
                "spec_changes": [list(s) for s in c.spec_changes],
                "oom": c.oom,
            }
            for c in comparisons
        ]
        click.echo(
            json.dumps({"status": "fail" if failed else "pass", "tolerance_pct": tolerance, "checks": rows}, indent=2)
        )
    else:
        on = f" on {current.device}" if current.device else ""
        click.echo(f"check {ref.name} against {baseline} (engine {engine}{on}, tolerance {tolerance:g} %)")
        for c in comparisons:
            click.echo(
                f"  {c.method:<9}{_gib(c.baseline_bytes):>12} -> {_gib(c.current_bytes):>12}"
                f"  {_gib(c.delta_bytes, sign=True):>14} ({c.delta_pct:+.2f} %)  {c.status}"
            )
        if base.device and base.device != current.device:
            click.echo(f"note: baseline measured on {base.device}, this run on {current.device}")
        if base.tool_version and base.tool_version != current.tool_version:
            click.echo(f"note: baseline written by lora-budget {base.tool_version}, this is {current.tool_version}")
        if any(c.status == "smaller" for c in comparisons) and not failed:
            click.echo("note: memory fell; lock the gain in with --update-baseline")
    for c in failed:
        grew = sorted(((d, cat) for cat, d in c.category_deltas.items() if d > 0), reverse=True)
        parts = ", ".join(f"{cat} {_gib(d, sign=True)}" for d, cat in grew[:3]) or "no single category"
        if not c.split:
            parts = "not split by category (CUDA counters give a total; --engine trace shows the split)"
        if c.oom:
            cause = (
                f"cause: {c.method} ran out of memory on {current.device} "
                f"({_gib(c.current_bytes)} allocated when it failed; baseline peak {_gib(c.baseline_bytes)})"
            )
        else:
            cause = (
                f"cause: {c.method} peak grew {_gib(c.delta_bytes, sign=True)} ({c.delta_pct:+.2f} %) to "
                f"{_gib(c.current_bytes)}, beyond the {tolerance:g} % tolerance; grew: {parts}"
            )
        if c.spec_changes:
            cause += "; spec changed: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in c.spec_changes)
        click.echo(cause, err=True)
    if failed:
        click.echo(
            f"fix: bring memory back under the baseline (e.g. --grad-ckpt, a smaller --seq-len), or, if the growth "
            f"is intended, rerun this command with --update-baseline and commit {baseline}",
            err=True,
        )
        raise SystemExit(1)
