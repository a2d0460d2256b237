"""Write ``catalog/coefficients.json``: the shipped records of the catalog's trace-derived entries.

``python -m lora_budget.derive.catalog`` derives, for every entry of ``models_derived.json``, its
architecture record (checked at the entry's own depth, layers of several types included) and, where
the activations can be traced, the coefficients of ``SETTINGS``: the planner's defaults (bf16, SDPA,
rank 16 on all linears, fp32 adapters, the plain loop) for full fine-tuning, LoRA and QLoRA, with
and without gradient checkpointing. Entries that cannot be derived at all are listed with the
reason (``refused``), single settings that fail under ``refused_settings``. Nothing is read from the
user cache: every record is derived anew.
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


def build(
    entries: list[dict[str, Any]],
    log: Any = print,
    budget_s: float | None = None,
    reuse: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The shipped file's content for ``entries`` (models_derived.json rows).

    Every architecture record first (seconds each); then the coefficients: layers of several types
    first, then one type, MoE after dense in each (each group in catalog order), until ``budget_s`` seconds have
    passed: entries not reached are listed under ``not_derived`` (the planner derives them on first
    use where torch is installed) so a long catalog still yields a file in bounded time.

    ``reuse``: a file this generator wrote with the same derivation code; its coefficients records
    of the same architecture key and settings, derived under the installed library versions, are
    kept instead of derived again (architecture records are always derived anew: seconds).
    """
    from lora_budget.catalog.shape import shape_from_config
    from lora_budget.derive.arch import derive_architecture
    from lora_budget.spec import ModelRef

    started = time.perf_counter()
    from lora_budget.derive.store import versions

    installed = versions()
    kept = {
        key: {k: r for k, r in records.items() if r.get("versions") == installed}
        for key, records in (reuse or {}).get("coefficients", {}).items()
    }
    out: dict[str, Any] = {
        "schema": derived.SCHEMA,
        "architectures": {},
        "coefficients": {},
        "refused": {},
        "refused_settings": {},
        "not_derived": {},
    }
    queue = []
    for entry in entries:
        key, depth = "", 0
        try:
            shape = shape_from_config(entry["config"], where=entry["name"])
            if not shape.derived:
                continue
            key, depth = derived.arch_key(shape.arch_config), shape.layers
            record = out["architectures"].get(key)
            if record is None or shape.layers not in record["depths"]:
                out["architectures"][key] = record = derive_architecture(json.loads(shape.arch_config), shape.layers)
        except LoraBudgetError as exc:
            out["refused"][entry["name"]] = {"reason": str(exc), "key": key, "depth": depth}
            log(f"{entry['name']}: refused ({str(exc)[:100]})")
            continue
        ref = ModelRef(
            name=entry["name"], hf_id=entry["hf_id"], source=entry["source"], shape=shape, config=entry["config"]
        )
        queue.append(((0 if record.get("types") else 1, record["moe"]), len(queue), ref, key, depth))
    for _, _, ref, key, depth in sorted(queue, key=lambda q: q[:2]):
        if kept.get(key):
            out["coefficients"].setdefault(key, {}).update(kept[key])
        if budget_s is not None and time.perf_counter() - started > budget_s:
            if not out["coefficients"].get(key):
                out["not_derived"][ref.name] = {
                    "key": key,
                    "depth": depth,
                    "reason": f"past the {budget_s:.0f} s budget",
                }
            continue
        began = time.perf_counter()
        try:
            failed = _derive_settings(ref, key, out["coefficients"])
        except LoraBudgetError as exc:
            out["refused"][ref.name] = {"reason": str(exc), "key": key, "depth": depth}
            log(f"{ref.name}: refused ({str(exc)[:100]})")
            continue
        if failed:
            out["refused_settings"][ref.name] = {"key": key, "depth": depth, "settings": failed}
        log(f"{ref.name}: {time.perf_counter() - began:.0f} s")
    return out


def _derive_settings(ref: Any, key: str, coefficients: dict[str, Any]) -> dict[str, str]:
    """Derive every setting of ``SETTINGS`` for ``ref`` into ``coefficients[key]``; the settings that
    fail, with their one-line reason (peft refusing a target, a LoRA rank above a linear's width).
    A model whose modelling code refuses SDPA (gpt-oss) is derived with eager attention instead,
    what transformers runs it with. Raises when no setting could be derived."""
    from lora_budget.derive import derive_coefficients
    from lora_budget.spec import TrainSpec

    failed: dict[str, str] = {}
    done = 0
    for method, ckpt in SETTINGS:
        for attn in ("sdpa", "eager"):
            try:
                spec = TrainSpec(framework="plain", model=ref, method=method, grad_ckpt=ckpt, attn=attn)
                skey = derived.settings_key(derived.settings(spec))
                if skey not in coefficients.get(key, {}):
                    coefficients.setdefault(key, {})[skey] = derive_coefficients(spec, save=False)
                done += 1
                break
            except Exception as exc:  # noqa: BLE001  (peft / transformers raise their own: one setting fails, not the file)
                text = (
                    str(exc) if isinstance(exc, LoraBudgetError) else f"the trace failed: {type(exc).__name__}: {exc}"
                )
                failed[f"method={method},grad_ckpt={ckpt},attn={attn}"] = text.splitlines()[0][:300] if text else text
                if "scaled_dot_product_attention" not in text:
                    break
    if not done:
        raise LoraBudgetError(next(iter(failed.values())))
    return failed


def main(argv: list[str] | None = None) -> None:
    """``python -m lora_budget.derive.catalog [--budget-s SECONDS]``."""
    import argparse

    from lora_budget.catalog.models import derived_catalog

    parser = argparse.ArgumentParser(prog="python -m lora_budget.derive.catalog")
    parser.add_argument("--budget-s", type=float, default=None, help="stop deriving coefficients after this long")
    parser.add_argument(
        "--reuse", type=Path, default=None, help="keep the records of this file (written by the same code)"
    )
    args = parser.parse_args(argv)
    reuse = json.loads(args.reuse.read_text()) if args.reuse else None

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        # an empty cache: architecture records are derived here, never read from a user's cache
        import os

        os.environ[derived.ENV_DIR] = folder
        data = build(
            list(derived_catalog()),
            log=lambda m: print(m, file=sys.stderr, flush=True),
            budget_s=args.budget_s,
            reuse=reuse,
        )
    from lora_budget.fsio import write_atomic

    write_atomic(Path(derived.SHIPPED), json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(
        f"{derived.SHIPPED}: {len(data['architectures'])} architectures, "
        f"{sum(len(v) for v in data['coefficients'].values())} coefficient records, {len(data['refused'])} refused, "
        f"{len(data['not_derived'])} not derived in the budget"
    )


if __name__ == "__main__":
    main()
