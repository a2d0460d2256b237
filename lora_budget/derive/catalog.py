"""Write ``catalog/coefficients.json``: the shipped records of the catalog's trace-derived entries.

``python -m lora_budget.derive.catalog`` derives, for every entry of ``models_derived.json``, its
architecture record (checked at the entry's own depth) and, where the activations can be traced
(no MoE routing, every layer alike), the coefficients of ``SETTINGS``: the planner's defaults (bf16,
SDPA, rank 16 on all linears, fp32 adapters, the plain loop) for full fine-tuning, LoRA and QLoRA,
with and without gradient checkpointing. Entries that cannot be derived are listed with the reason
(``refused``). Nothing is read from the user cache: every record is derived anew.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lora_budget.core import derived
from lora_budget.errors import LoraBudgetError

SETTINGS = tuple((method, ckpt) for method in ("full", "lora", "qlora") for ckpt in (False, True))
"""(method, checkpointing) shipped, for the plain reference loop (no autocast), stated explicitly: on
fake CPU tensors autocast follows CPU rules for LayerNorm and pow, so the trace refuses autocast for
LayerNorm / tanh-GELU models (every shipped architecture) and no Trainer-autocast record is derived."""


def build(entries: list[dict[str, Any]], log: Any = print) -> dict[str, Any]:
    """The shipped file's content for ``entries`` (models_derived.json rows)."""
    from lora_budget.catalog.shape import shape_from_config
    from lora_budget.derive import derive_coefficients
    from lora_budget.derive.arch import derive_architecture
    from lora_budget.spec import ModelRef, TrainSpec

    out: dict[str, Any] = {"schema": derived.SCHEMA, "architectures": {}, "coefficients": {}, "refused": {}}
    for entry in entries:
        started = time.perf_counter()
        key, depth = "", 0
        try:
            shape = shape_from_config(entry["config"], where=entry["name"])
            if not shape.derived:
                continue
            key, depth = derived.arch_key(shape.arch_config), shape.layers
            if key not in out["architectures"]:
                out["architectures"][key] = derive_architecture(json.loads(shape.arch_config), shape.layers)
            elif shape.layers not in out["architectures"][key]["depths"]:
                out["architectures"][key] = derive_architecture(json.loads(shape.arch_config), shape.layers)
            ref = ModelRef(
                name=entry["name"], hf_id=entry["hf_id"], source=entry["source"], shape=shape, config=entry["config"]
            )
            for method, ckpt in SETTINGS:
                spec = TrainSpec(framework="plain", model=ref, method=method, grad_ckpt=ckpt)
                skey = derived.settings_key(derived.settings(spec))
                if skey not in out["coefficients"].get(key, {}):
                    out["coefficients"].setdefault(key, {})[skey] = derive_coefficients(spec, save=False)
        except LoraBudgetError as exc:
            out["refused"][entry["name"]] = {"reason": str(exc), "key": key, "depth": depth}
            log(f"{entry['name']}: refused ({str(exc)[:100]})")
            continue
        log(f"{entry['name']}: {time.perf_counter() - started:.0f} s")
    return out


def main() -> None:
    from lora_budget.catalog.models import derived_catalog

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        # an empty cache: architecture records are derived here, never read from a user's cache
        import os

        os.environ[derived.ENV_DIR] = folder
        data = build(list(derived_catalog()), log=lambda m: print(m, file=sys.stderr, flush=True))
    Path(derived.SHIPPED).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(
        f"{derived.SHIPPED}: {len(data['architectures'])} architectures, "
        f"{sum(len(v) for v in data['coefficients'].values())} coefficient records, {len(data['refused'])} refused"
    )


if __name__ == "__main__":
    main()
