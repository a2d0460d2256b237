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

    rows = list_models()
    if as_json:
        data = [
            {
                "name": e["name"],
                "hf_id": e["hf_id"],
                "family": e["family"],
                "aliases": e["aliases"],
                "param_count": n,
                "planner": "analytical",
                "source": e["source"],
            }
            for e, n in rows
        ]
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(", ".join(e["aliases"])) for e, _ in rows) + 2
    click.echo(f"{'name':<20}{'parameters':>18}  {'family':<9}{'planner':<12}{'aliases':<{width}}hf id")
    for e, n in rows:
        aliases = ", ".join(e["aliases"])
        click.echo(f"{e['name']:<20}{n:>18,}  {e['family']:<9}{'analytical':<12}{aliases:<{width}}{e['hf_id']}")
    click.echo(
        f"\n{len(rows)} models; configs copied from each model's config.json (source in --json); "
        "planner: analytical = the hand-written per-architecture walk."
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
