"""``lora-budget models`` and ``lora-budget gpus``: the catalogs."""

from __future__ import annotations

import json

import click

from lora_budget.units import GiB


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="JSON list.")
def models_cmd(as_json: bool) -> None:
    """List the model catalog with exact parameter counts.

    \b
    Examples:
      lora-budget models
      lora-budget models --json
    """
    from lora_budget.catalog.models import list_models
    from lora_budget.core.derived import kind

    rows = list_models()
    if as_json:
        data = [
            {
                "name": e["name"],
                "hf_id": e["hf_id"],
                "family": e["family"],
                "aliases": e["aliases"],
                "param_count": n,
                "planner": kind(e["config"], e["name"]),
                "source": e["source"],
            }
            for e, n in rows
        ]
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(", ".join(e["aliases"])) for e, _ in rows) + 2
    name_w = max(20, max(len(e["name"]) for e, _ in rows) + 2)
    family_w = max(9, max(len(e["family"]) for e, _ in rows) + 1)
    click.echo(f"{'name':<{name_w}}{'parameters':>18}  {'family':<{family_w}}{'planner':<15}{'aliases':<{width}}hf id")
    for e, n in rows:
        aliases = ", ".join(e["aliases"])
        count = f"{n:,}" if n is not None else "n/a"
        planner = kind(e["config"], e["name"])
        click.echo(
            f"{e['name']:<{name_w}}{count:>18}  {e['family']:<{family_w}}{planner:<15}{aliases:<{width}}{e['hf_id']}"
        )
    click.echo(
        f"\n{len(rows)} models; configs copied from each model's config.json (source in --json); "
        "planner: analytical = the hand-written per-architecture walk, trace-derived = coefficients traced "
        "from a truncated copy of the model (`lora-budget derive`; layers of several types each traced), "
        "params only = its parameter inventory is stored, its coefficients are derived on first plan where "
        "torch is installed (or the trace refused them), not yet = an architecture transformers does not build."
    )


@click.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="JSON list.")
def gpus_cmd(as_json: bool) -> None:
    """List the GPU catalog: memory, bf16 support, peak dense tensor TFLOP/s.

    \b
    Examples:
      lora-budget gpus
      lora-budget gpus --json
    """
    from lora_budget.catalog.gpus import catalog

    cards = catalog()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": g.name,
                        "memory_bytes": g.memory_bytes,
                        "bf16": g.bf16,
                        "peak_bf16_tflops": g.peak_bf16_tflops,
                        "peak_fp16_tflops": g.peak_fp16_tflops,
                        "memory_note": g.memory_note,
                        "source": g.source,
                    }
                    for g in cards
                ],
                indent=2,
            )
        )
        return
    click.echo(f"{'name':<14}{'memory':>11}{'bf16':>6}{'bf16 TFLOP/s':>14}{'fp16 TFLOP/s':>14}")
    for g in cards:
        bf = f"{g.peak_bf16_tflops:.1f}" if g.peak_bf16_tflops else "-"
        fp = f"{g.peak_fp16_tflops:.1f}" if g.peak_fp16_tflops else "-"
        click.echo(f"{g.name:<14}{g.memory_bytes / GiB:>7.2f} GiB{'yes' if g.bf16 else 'no':>6}{bf:>14}{fp:>14}")
    click.echo(f"\n{len(cards)} GPUs; dense (non-sparse) tensor throughput; sources in --json.")
