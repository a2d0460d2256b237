"""The stored evidence of the LitGPT trace (``runtime/litgpt.py``): one case per mechanism, planned and
traced (``data/litgpt-trace.json``, the plan-vs-trace contract), and LitGPT's own step traced at every
published LitGPT row's configuration (``data/litgpt-published-traces.json``)::

    PYTHONPATH=<litgpt 0.4.13> python -m lora_budget.runtime.litgpt               # the cases
    PYTHONPATH=<litgpt 0.4.13> python -m lora_budget.runtime.litgpt --published   # the published rows
"""

from __future__ import annotations

from typing import Any

from lora_budget.runtime.litgpt import LITGPT_COMMIT, LITGPT_NAMES, LITGPT_VERSION, trace_litgpt
from lora_budget.spec import TrainSpec

QLORA_042 = dict(method="qlora", bitsandbytes="0.42.0", double_quant=False, optimizer="paged_adamw")
"""LitGPT's QLoRA as its config hub runs it: ``quantize: bnb.nf4`` (no double quantization),
bitsandbytes 0.42.0, ``bnb.optim.PagedAdamW``."""

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lora-qv-dropout-gqa": ("Llama-3.2-1B", dict(targets="query,value", lora_dropout=0.05)),
    "lora-all-head": ("Llama-3.2-1B", dict(targets="all-linear,head", lora_dropout=0.05)),
    "lora-qv-mha": ("Llama-2-7B", dict(targets="query,value", lora_dropout=0.05)),
    "lora-b1-no-dropout": ("Llama-3.2-1B", dict(targets="all-linear", batch_size=1)),
    "lora-gemma-mqa-head": ("Gemma-2B", dict(targets="all-linear,head", lora_dropout=0.1)),
    "qlora-bnb042-qv": ("Llama-3.2-1B", dict(targets="query,value", lora_dropout=0.05, **QLORA_042)),
    "qlora-bnb050-qv": ("Llama-3.2-1B", dict(targets="query,value", lora_dropout=0.05, method="qlora")),
    "qlora-bnb042-all-head-mha": ("Phi-3-mini-4k", dict(targets="all-linear,head", lora_dropout=0.05, **QLORA_042)),
    "qlora-bnb042-qv-16-layers": (
        "Llama-3.2-1B",
        dict(targets="query,value", lora_dropout=0.05, rank=32, layers=16, **QLORA_042),
    ),
    "qlora-bnb042-b1-one-chunk": ("Llama-3.2-1B", dict(targets="all-linear", batch_size=1, seq_len=96, **QLORA_042)),
    "qlora-bnb041-longest-first": (
        "Llama-2-7B",
        dict(targets="query,value", lora_dropout=0.05, batch_size=1, seq_len=1304, previous_step=False, **QLORA_042),
    ),
}
"""Each LitGPT mechanism on a 2-layer copy of a real-width model (b 2, s 512, r 8 unless set):
the fused qkv's partial LoRA (q+v: zero_pad), grouped-query copies vs one query per group (views),
lora_head, LoRA dropout 0 vs > 0, the 4-bit head dequantized from Lightning's fp16 state,
bitsandbytes 0.42's kept inputs (with every layer of Llama-3.2-1B: they outlive the step, as
published row 1029 runs it), one sequence in one 128-token chunk, lit-gpt 2023's longest batch
first with nothing of a previous step; every case through Fabric's fp32 output cast and LitGPT's
``validate``."""


def case_spec(case: str) -> TrainSpec:
    from lora_budget.catalog.models import resolve_model
    from lora_budget.catalog.shape import shape_from_config
    from lora_budget.records import replace

    name, kwargs = CASES[case]
    kwargs = dict(kwargs)
    layers = kwargs.pop("layers", 2)
    ref = resolve_model(name)
    config = {**ref.config, "num_hidden_layers": layers}
    model = replace(ref, name=f"{ref.name} ({layers} layers)", shape=shape_from_config(config), config=config)
    return TrainSpec(model=model, framework="litgpt", **{"batch_size": 2, "seq_len": 512, "rank": 8, **kwargs})


def write_cases(path: str) -> list[dict[str, Any]]:
    """Trace every case, plan it, and write both with the versions and commit they came from."""
    import json
    import subprocess

    import bitsandbytes
    import lightning
    import litgpt
    import torch

    from lora_budget.core.model import estimate

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for case in CASES:
        spec = case_spec(case)
        traced = trace_litgpt(spec)
        planned = estimate(spec)
        rows.append(
            {
                "case": case,
                "model": CASES[case][0],
                "settings": CASES[case][1],
                "traced_peak_bytes": traced.peak_bytes,
                "traced_phase": traced.breakdown.phase,
                "traced_at": f"{traced.peak_op} in {traced.peak_module}",
                "traced": {k: v for k, v in traced.breakdown.as_dict().items() if isinstance(v, int)},
                "planned_peak_bytes": planned.peak_bytes,
                "planned": {k: v for k, v in planned.as_dict().items() if isinstance(v, int)},
                "error": round(planned.peak_bytes / traced.peak_bytes - 1, 6),
            }
        )
        print(f"{case}: plan {planned.peak_bytes:,} trace {traced.peak_bytes:,} ({rows[-1]['error']:+.3%})")
    out = {
        "about": "plan vs a trace of LitGPT's own finetune/lora.py step on fake tensors (runtime/litgpt.py)",
        "litgpt": litgpt.__version__ if hasattr(litgpt, "__version__") else LITGPT_VERSION,
        "litgpt_commit_of_the_published_table": LITGPT_COMMIT,
        "torch": torch.__version__,
        "bitsandbytes_installed": bitsandbytes.__version__,
        "bitsandbytes_emulated": "0.42.0 Linear4bit.forward and MatMul4Bit restated on the installed ops "
        "for specs of bitsandbytes <= 0.43.1 (_bnb_042); fp16 quantization state (Lightning's quantize)",
        "lightning": lightning.__version__,
        "loop": "Lightning's _FabricModule over litgpt.lora.GPT, two fit iterations, then litgpt's validate",
        "lora_budget_commit": commit,
        "cases": rows,
    }
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return rows


def published_configs() -> list[tuple[dict[str, str], TrainSpec, frozenset[str], bool]]:
    """(row, spec, LitGPT flags, previous step alive) of every published single-GPU LitGPT LoRA /
    QLoRA measurement with a LitGPT config here; the spec as the row maps (gradient accumulation 1:
    the trace takes none); lit-gpt 2023's rows run their longest batch first (``LONGEST_FIRST``)."""
    from lora_budget.core.litgpt import _parts
    from lora_budget.records import replace
    from lora_budget.validation.published import load_rows
    from lora_budget.validation.published_frameworks import LONGEST_FIRST, framework_key
    from lora_budget.validation.published_map import lora_targets, map_row

    out = []
    for row in load_rows():
        if framework_key(row) != "litgpt" or row["method"] not in ("lora", "qlora") or row["outcome"] != "measured":
            continue
        spec = map_row(row).spec
        if spec is None or spec.gpus > 1 or spec.grad_ckpt or spec.model.name not in LITGPT_NAMES:
            continue
        names, head = lora_targets(row["lora_targets"])
        flags = _parts(",".join(names + (("lm_head",) if head else ())))
        out.append((row, replace(spec, grad_accum=1), flags, LONGEST_FIRST not in row["seq_len_kind"]))
    return out


def write_published(path: str, missing_only: bool = False) -> list[dict[str, Any]]:
    """Trace LitGPT's own code at every published row's configuration, the blocks the planner does
    not walk included, and write the traced peaks beside the published figures (and the plan where
    ``--framework litgpt`` walks the row). ``missing_only``: keep the rows the file has, trace the
    others (each row names the commit it was traced at)."""
    import json
    import os
    import subprocess

    from lora_budget.core.model import peak_model

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    kept: dict[int, dict[str, Any]] = {}
    if missing_only and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        kept = {
            r["id"]: {**r, "lora_budget_commit": r.get("lora_budget_commit", old["lora_budget_commit"])}
            for r in old["rows"]
        }
    rows = []
    for row, spec, flags, previous in published_configs():
        if int(row["id"]) in kept:
            rows.append(kept[int(row["id"])])
            continue
        traced = trace_litgpt(spec, flags=flags, previous_step=previous)
        entry: dict[str, Any] = {
            "id": int(row["id"]),
            "model": spec.model.name,
            "litgpt_config": LITGPT_NAMES[spec.model.name],
            "method": spec.method,
            "flags": sorted(flags),
            "batch_size": spec.batch_size,
            "seq_len": spec.seq_len,
            "previous_step": previous,
            "published_bytes": round(float(row["memory_gib"]) * 2**30),
            "traced_peak_bytes": traced.peak_bytes - traced.paged_bytes,
            "traced_at": f"{traced.peak_op} in {traced.peak_module}",
            "planned_bytes": None,
            "lora_budget_commit": commit,
        }
        if spec.framework == "litgpt":
            model = peak_model(spec)
            entry["planned_bytes"] = model.peak_bytes(spec.batch_size, spec.seq_len) - model.static.optimizer_pageable
        rows.append(entry)
        error = entry["traced_peak_bytes"] / entry["published_bytes"] - 1
        print(f"{entry['id']} {entry['model']}: traced {error:+.2%}")
    out = {
        "about": "LitGPT's own finetune/lora.py step (runtime/litgpt.py) traced at each published LitGPT row's "
        "configuration (gradient accumulation 1), allocator-visible bytes (paged optimizer state left out)",
        "rows": rows,
    }
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return rows
