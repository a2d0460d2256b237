"""``lora-budget derive``: trace-derived coefficients for an architecture the analytical walk does not know."""

from __future__ import annotations

import json
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import config_notes, spec_kwargs, spec_options


@click.command("derive")
@spec_options
@click.option("--each-ckpt", is_flag=True, help="Derive with and without gradient checkpointing.")
@click.option("--force", is_flag=True, help="Derive again even when coefficients are stored.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per derived record.")
@user_errors
def derive_cmd(each_ckpt: bool, force: bool, as_json: bool, **kw: Any) -> None:
    """Derive and cache the planner's coefficients for a model the analytical walk does not know.

    Builds a truncated copy of the model at its real width on fake tensors (2 layers, or the
    fewest leading layers that hold each of its layer types), traces the real
    transformers + peft (+ bitsandbytes) step at five batch and sequence sizes, and stores the
    per-token terms in the user cache, so `plan` answers torch-free and instantly afterwards
    (`plan` also derives on its own when torch is installed). Needs torch, transformers and peft.

    \b
    Examples:
      lora-budget derive -m ./phi-2/config.json --method lora,full --each-ckpt
      lora-budget derive -m StarCoder2-7B --method qlora --grad-ckpt
      lora-budget derive -m EleutherAI/pythia-1.4b --method lora --json
    """
    import time

    from lora_budget.api import MAIN_METHODS
    from lora_budget.catalog.models import resolve_model
    from lora_budget.core.derived import (
        arch_key,
        cache_file,
        coefficients_record,
        describe,
        inventory,
        settings,
        settings_key,
        stored_coefficients,
    )
    from lora_budget.errors import LoraBudgetError
    from lora_budget.spec import TrainSpec

    for note in config_notes():
        click.echo(f"note: {note}", err=True)
    ref = resolve_model(kw["model"])
    if not ref.shape.derived:
        raise LoraBudgetError(
            f"{ref.name} ({ref.shape.model_type}) is modelled analytically; there is nothing to derive"
        )
    methods = MAIN_METHODS if kw["method"] == "all" else tuple(m.strip() for m in kw["method"].split(","))
    options = spec_kwargs(kw)
    options["batch_size"] = 1 if str(kw["batch_size"]).strip().lower() == "auto" else int(kw["batch_size"])
    ckpts = (False, True) if each_ckpt else (bool(options.get("grad_ckpt")),)
    inventory(ref.shape)  # the architecture record first (one message if it cannot be derived)
    rows = []
    for method in methods:
        for ckpt in ckpts:
            opts = dict(options, grad_ckpt=ckpt)
            if method != "full":
                opts.pop("master_weights", None)
            spec = TrainSpec(model=ref, method=method, **opts)
            values = settings(spec)
            started = time.perf_counter()
            stored = not force and stored_coefficients(spec) is not None
            if force:
                from lora_budget.derive import derive_coefficients

                record = derive_coefficients(spec)
            else:
                record = coefficients_record(spec)
            rows.append(
                {
                    "settings": values,
                    "key": settings_key(values),
                    "derived_s": round(time.perf_counter() - started, 2),
                    "record_wall_s": record["wall_s"],
                    "versions": record["versions"],
                    "check_residual_bytes": record["check_residual_bytes"],
                }
            )
            if not as_json:
                click.echo(
                    f"{ref.name}: {describe(values):<28} "
                    + ("stored" if stored else f"derived in {rows[-1]['derived_s']:.0f} s")
                )
    path = cache_file(arch_key(ref.shape.arch_config))
    if as_json:
        click.echo(json.dumps({"model": ref.name, "cache_file": str(path), "records": rows}, indent=2))
    else:
        click.echo(f"cache: {path}")
