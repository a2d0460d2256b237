"""One published measurement (a row of data/published-memory.csv) as a TrainSpec, or why it cannot be one.

The mapping reads only what the row states. Where the source ran something the spec cannot express
(torch.compile, chunked cross-entropy, activation offloading, the optimizer step inside backward,
LoRA on the output projection), the row keeps its spec and gets a caveat; a caveat is *material*
when it changes the peak by more than the comparison could tolerate, and such rows stay out of the
summary statistics. Nothing here is fitted to the published figures.
"""

from __future__ import annotations

import re
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec
from lora_budget.units import GiB, MiB
from lora_budget.validation.published_frameworks import (
    framework_key,
    hf_trainer_caveats,
    litgpt_caveats,
    litgpt_fields,
    litgpt_targets,
)

UNIT_BYTES: dict[str, int] = {"GB(1e9)": 10**9, "GiB": GiB, "MiB": MiB}
"""Bytes per published unit: GB is decimal (torchtune's older logs divide by 1e9), GiB/MiB binary."""

SAME_SHAPE: dict[str, tuple[str, str]] = {
    "meta-llama/Meta-Llama-3-8B": (
        "Llama-3.1-8B",
        "Meta-Llama-3-8B planned as Llama-3.1-8B: identical tensor shapes (only RoPE scaling and max positions differ)",
    ),
    "meta-llama/Meta-Llama-3.1-8B": (
        "Llama-3.1-8B",
        "meta-llama/Meta-Llama-3.1-8B is the earlier name of the meta-llama/Llama-3.1-8B repository",
    ),
    "unsloth/Mistral-7B-v0.2": (
        "Mistral-7B-v0.1",
        "Mistral-7B-v0.2 (base) planned as Mistral-7B-v0.1: identical tensor shapes (v0.2 changes RoPE theta "
        "and drops the sliding window)",
    ),
}
"""Published models absent from the catalog whose every tensor shape equals a catalog entry's."""

TORCHTUNE_LINEARS: dict[str, tuple[str, ...]] = {
    "q_proj": ("q_proj",),
    "k_proj": ("k_proj",),
    "v_proj": ("v_proj",),
    "output_proj": ("o_proj",),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
"""torchtune's LoRA module names -> the transformers Llama module names the spec uses
(torchtune's MLP w1/w3/w2 are gate_proj/up_proj/down_proj)."""

HF_LINEARS: tuple[str, ...] = ("o_proj", "gate_proj", "up_proj", "down_proj", "query_key_value", "qkv_proj")
"""transformers module names a PEFT ``target_modules`` list may give directly (q/k/v_proj are shared
with torchtune's names above; query_key_value is BLOOM's and Falcon's fused projection, qkv_proj Phi-3's)."""

COMPILE_NOTE = "torch.compile: fused kernels keep fewer activations (rows 150 -> 151, same config: 60.0 -> 51.0 GiB)"


@dataclass(frozen=True, slots=True)
class Mapped:
    """What the row says, as the planner's input, plus what the spec cannot say."""

    spec: TrainSpec | None
    reasons: tuple[str, ...]
    """Why the row cannot be planned; empty when ``spec`` is set."""
    caveats: tuple[str, ...]
    """Differences between the published run and the spec, each with its effect."""
    material: bool
    """A caveat changes the peak materially: keep the row out of the summary."""


def null(value: str | None) -> bool:
    return value is None or value.strip() in ("", "null")


def published_bytes(row: dict[str, str]) -> int | None:
    """The published figure in bytes, from ``memory_value`` and ``memory_unit`` (never from ``memory_gib``)."""
    if null(row["memory_value"]):
        return None
    unit = row["memory_unit"].strip()
    if unit not in UNIT_BYTES:
        raise LoraBudgetError(f"row {row['id']}: unknown memory unit {unit!r}")
    return round(float(row["memory_value"]) * UNIT_BYTES[unit])


def metric_kind(row: dict[str, str]) -> str:
    """``allocated`` (max_memory_allocated, peak active), ``reserved``, ``nvidia-smi`` or ``unstated``.

    torchtune's memory stats report active, allocated and reserved peaks; several of its tables do
    not say which one they quote, and those rows are ``unstated``.
    """
    text = row["memory_metric"].lower()
    if "nvidia-smi" in text:
        return "nvidia-smi"
    if any(marker in text for marker in ("not say", "not stated", "unspecified")):
        return "unstated"
    if "reserved" in text:
        return "reserved"
    if "max_memory_allocated" in text or "active" in text:
        return "allocated"
    return "unstated"


def _reasons(row: dict[str, str]) -> list[str]:
    """Why a row cannot be planned at all (architecture, sharding, missing configuration)."""
    out = []
    notes = row["notes"].lower()
    if "seq2seq" in notes:
        out.append("seq2seq (T5/mT0) architecture not supported")
    if "bert" in row["hf_model_id"].lower():
        out.append("encoder-only BERT (sequence classification) not supported")
    gpus = _gpus(row)
    parallel = row["parallelism"]
    if gpus > 1 and "FSDP" not in parallel:
        out.append(f"multi-GPU ({gpus} GPUs, {parallel}): only FSDP rows are mapped")
    elif gpus == 1 and any(word in parallel + row["other_memory_settings"] for word in ("DeepSpeed", "ZeRO")):
        out.append("DeepSpeed ZeRO-3 offload on one GPU (the planner shards over 2 or more)")
    if null(row["seq_len"]):
        out.append(f"dynamic sequence length without a stated maximum ({row['seq_len_kind']})")
    if row["optimizer"].lower().startswith("not stated"):
        out.append("configuration not documented (optimizer not stated)")
    if null(row["batch_size_per_gpu"]):
        out.append("micro-batch not stated")
    return out


def _gpus(row: dict[str, str]) -> int:
    return int(row["num_gpus"]) if not null(row["num_gpus"]) else 1


def _sharding(row: dict[str, str]) -> dict[str, Any]:
    """World size, strategy and offload of a multi-GPU FSDP row (its per-GPU figure is compared)."""
    gpus = _gpus(row)
    if gpus == 1:
        return {}
    offload = "params" if "cpu offload" in row["parallelism"].lower() else "none"
    return {"gpus": gpus, "strategy": "fsdp", "offload": offload}


def _model(row: dict[str, str]) -> tuple[Any, str | None]:
    from lora_budget.catalog.models import resolve_model

    hf = row["hf_model_id"].strip()
    if hf in SAME_SHAPE:
        name, note = SAME_SHAPE[hf]
        return resolve_model(name), note
    return resolve_model(hf), None


def _dtype(row: dict[str, str]) -> tuple[str, bool]:
    """(dtype, master_weights) from ``compute_precision``: pure bf16, fp32, or fp16 mixed precision."""
    text = row["compute_precision"].lower()
    if text.startswith("bf16"):
        return "bf16", False
    if text.startswith("fp16"):
        return "fp16", "master" in row["trainable_precision"].lower()
    if text.startswith("fp32"):
        return "fp32", False
    raise LoraBudgetError(f"row {row['id']}: cannot read compute precision {row['compute_precision']!r}")


def _adapter_dtype(row: dict[str, str]) -> str:
    """torchtune trains LoRA A/B in the model dtype (``trainable_precision`` bf16); PEFT keeps them fp32
    (since 0.12, ``autocast_adapter_dtype``); peft 0.11 and older gave them a float base weight's dtype."""
    text = row["trainable_precision"].lower()
    return text[:4] if text.startswith(("bf16", "fp16")) else "fp32"


def _attention(text: str) -> str:
    """The spec's kernel for ``attention_impl``: flash-attn 2, torch SDPA, else eager."""
    t = text.lower()
    return "flash" if "flash_attention_2" in t else "sdpa" if "sdpa" in t else "eager"


def optimizer_name(text: str) -> str:
    """The spec's optimizer for a published optimizer description."""
    t = text.lower()
    if "pagedadamw8bit" in t or ("8-bit" in t and "paged" in t):
        return "paged_adamw8bit"
    if "pagedadamw" in t:
        return "paged_adamw"
    if "adam8bit" in t or "8-bit adamw" in t:
        return "adamw8bit"
    if "adafactor" in t:
        return "adafactor"
    if "adamw" in t:
        return "adamw_foreach" if "foreach" in t else "adamw"
    raise LoraBudgetError(f"cannot map optimizer {text!r}")


def lora_targets(text: str) -> tuple[tuple[str, ...], bool]:
    """(transformers module names, output projection adapted) for a published target list.

    Parentheticals such as ``(w1,w2,w3)`` or ``(default config)`` and a trailing ``; not lm_head``
    only comment on the list; ``MLP`` is torchtune's ``apply_lora_to_mlp``, ``output`` its
    ``apply_lora_to_output`` (the lm_head).
    """
    t = re.sub(r"\([^)]*\)", "", text)
    t = t.split(";")[0]
    names: list[str] = []
    output = False
    for token in re.split(r"[,+]", t):
        key = token.strip().lower()
        if not key:
            continue
        if key == "output":
            output = True
            continue
        if key in HF_LINEARS:
            names.append(key)
            continue
        if key not in TORCHTUNE_LINEARS:
            raise LoraBudgetError(f"cannot map LoRA target {token.strip()!r}")
        names.extend(TORCHTUNE_LINEARS[key])
    return tuple(dict.fromkeys(names)), output


def map_row(row: dict[str, str]) -> Mapped:
    """The row's spec (or the reasons it has none) and the caveats of the mapping."""
    reasons = _reasons(row)
    try:
        model, model_note = _model(row)
    except LoraBudgetError:
        model, model_note = None, None
        if not any(r.startswith(("seq2seq", "encoder-only")) for r in reasons):
            reasons.insert(0, f"model not in the catalog ({row['hf_model_id']}) and no config.json shipped")
    if reasons or model is None:
        return Mapped(spec=None, reasons=tuple(reasons), caveats=(), material=False)

    method = row["method"].strip()
    dtype, master = _dtype(row)
    kwargs: dict[str, Any] = dict(
        model=model,
        method=method,
        dtype=dtype,
        master_weights=master,
        optimizer=optimizer_name(row["optimizer"]),
        batch_size=int(row["batch_size_per_gpu"]),
        seq_len=int(row["seq_len"]),
        grad_accum=1 if null(row["grad_accum"]) else int(row["grad_accum"]),
        grad_ckpt=row["gradient_checkpointing"].strip().lower().startswith("true"),
        attn=_attention(row["attention_impl"]),
        **_sharding(row),
    )
    caveats: list[str] = [model_note] if model_note else []
    output_lora = False
    litgpt = framework_key(row) == "litgpt"
    if method != "full":
        from lora_budget.core.params import linear_names

        names, output_lora = lora_targets(row["lora_targets"])
        kwargs.update(rank=int(row["lora_rank"]), alpha=int(row["lora_alpha"]), adapter_dtype=_adapter_dtype(row))
        kwargs["targets"] = ",".join(names)
        single = _gpus(row) == 1 and not kwargs["grad_ckpt"]  # core/litgpt.py walks the single-device path
        lit = litgpt_fields(names, output_lora, model.shape, method, row) if litgpt and single else None
        if lit:  # LitGPT's own model, LoRA flags and loop (core/litgpt.py): lm_head's LoRA included
            kwargs.update(lit, adapter_dtype="bf16")
            output_lora = False
        elif litgpt:
            kwargs["targets"], fused_note = litgpt_targets(names, linear_names(model.shape))
            caveats += [fused_note] if fused_note else []
    if method == "qlora" and "no double quant" in row["frozen_weight_precision"].lower():
        kwargs["double_quant"] = False
    kwargs.update(_mechanisms(row, method))
    if litgpt and kwargs.get("framework") != "litgpt":
        # a LitGPT run its own layout does not walk (full fine-tuning, other blocks): bf16-true runs
        # without autocast, so the plain loop is the nearer step
        kwargs["framework"] = "plain"
    spec = TrainSpec(**kwargs)
    if method != "full" and spec.framework != "litgpt" and not litgpt:
        from lora_budget.core.params import linear_names

        moe_linears = model.shape.is_moe and spec.transformers_version < (5, 0, 0)  # experts are nn.Linear too
        if set(names) == set(linear_names(model.shape)) and not moe_linears:
            spec = _replace(spec, targets="all-linear")
    if "compile" in _run_settings(row).lower():
        spec = _compiled(spec)
    material = False
    for caveat, is_material in _caveats(row, spec, output_lora):
        caveats.append(caveat)
        material = material or is_material
    return Mapped(spec=spec, reasons=(), caveats=tuple(caveats), material=material)


def _mechanisms(row: dict[str, str], method: str) -> dict[str, Any]:
    """The framework mechanisms the row states, as spec fields: torchtune's recipes (chunked
    cross-entropy), LoRA dropout, and the bitsandbytes release of QLoRA runs."""
    import re

    out: dict[str, Any] = {}
    if framework_key(row) in ("plain", "hf-trainer"):
        # the row's own loop: PEFT's accelerate scripts (plain) or the Trainer, not the spec's default
        out["framework"] = framework_key(row)
    if framework_key(row) == "hf-trainer" and "no autocast" in row.get("precision_mode", "").lower():
        # a Trainer run with 16-bit weights and neither bf16=True nor fp16=True: no autocast
        out["autocast"] = False
    if framework_key(row) == "torchtune":
        # chunked cross-entropy only where the row says the recipe used it: earlier recipes (and the
        # baseline of the cumulative technique table) take cross-entropy of the whole fp32 logits
        out["framework"] = "torchtune"
        out["loss"] = "chunked-ce" if "CEWithChunkedOutputLoss" in _run_settings(row) else "full-ce"
    if "activation offloading" in _run_settings(row) and row["gradient_checkpointing"].strip().lower() == "true":
        # torchtune's enable_activation_offloading (its recipes require checkpointing with it)
        out["activation_offload"] = True
    p = row.get("lora_dropout", "null").strip()
    if method != "full" and not null(p) and p:
        out["lora_dropout"] = float(p)
    if method in ("qlora", "lora8bit") and row.get("kbit_prep", "null").strip().lower().startswith("true"):
        out["kbit_prep"] = True  # the row says the run called peft's prepare_model_for_kbit_training
    found = re.search(r"bitsandbytes (\d+\.\d+(?:\.\d+)?)", row.get("lib_versions", "") or "")
    if method == "qlora" and found:
        out["bitsandbytes"] = found.group(1)
    if framework_key(row) in ("plain", "hf-trainer"):
        # the transformers and torch releases the run used: its model, loss and default optimizer
        for lib in ("transformers", "torch"):
            found = re.search(lib + r" (\d+\.\d+(?:\.\d+)?)", row.get("lib_versions", "") or "")
            if found:
                out[lib] = found.group(1)
        if "TrainingArguments default" in row["optimizer"] and "transformers" in out and "torch" in out:
            out["optimizer"] = None  # the Trainer's default for those releases (spec.default_optimizer)
    return out


def _compiled(spec: TrainSpec) -> TrainSpec:
    """The row ran torch.compile (torchtune's ``compile: True``): the spec with ``compile`` where the
    planner models it for this step (``core/compiled.py``); otherwise unchanged, and the caveat stays."""
    from lora_budget.core.compiled import check

    compiled = _replace(spec, compile=True)
    try:
        check(compiled)
    except LoraBudgetError:
        return spec
    return compiled


def _run_settings(row: dict[str, str]) -> str:
    """The row's free-text settings, where the memory features its run used are named."""
    return row["other_memory_settings"] + " " + row["method_detail"]


def _replace(spec: TrainSpec, **changes: Any) -> TrainSpec:
    from lora_budget.records import replace

    return replace(spec, **changes)


def _caveats(row: dict[str, str], spec: TrainSpec, output_lora: bool) -> list[tuple[str, bool]]:
    """(caveat, material) for everything the published run did that the spec does not."""
    out: list[tuple[str, bool]] = []
    settings = _run_settings(row)
    optimizer = row["optimizer"]
    if "compile" in settings.lower() and not spec.compile:
        out.append((COMPILE_NOTE, True))
    if "CEWithChunkedOutputLoss" in settings and spec.loss_kernel != "chunked-ce":
        out.append(("chunked cross-entropy: the fp32 logits are never whole (planner: transformers' loss)", True))
    if "activation offloading" in settings and not spec.activation_offload:
        out.append(("activation offloading to CPU: saved activations leave the GPU", True))
    if "optimizer_in_bwd" in settings + optimizer:
        out.append(("optimizer step inside backward: the full set of gradients never lives at once", True))
    if spec.gpus > 1:
        fsdp = {
            "hf-trainer": "accelerate's FSDP1 (the Trainer's FSDP)",
            "litgpt": "Lightning's FSDPStrategy (FSDP1)",
        }.get(framework_key(row), "torchtune's FSDP (FSDP1 in older releases, FSDP2 `fully_shard` since 0.3)")
        out.append((f"{fsdp} on {spec.gpus} GPUs planned as FSDP2, per GPU", False))
    if spec.optimizer.startswith("paged"):
        out.append(("bitsandbytes paged state sits outside torch's allocator: compared without it", False))
    if row["reliability"].strip() == "low":
        out.append((f"reliability low: {row['notes'].strip()}", True))
    if row["seq_len_kind"].lower().startswith("max"):
        out.append(_seq_bound(spec, published_bytes(row)))
    if spec.method == "qlora" and framework_key(row) == "torchtune":
        out.extend(_qlora_caveats(spec, row))
    if framework_key(row) == "litgpt":
        head_gib = alloc_gib(spec.model.shape.vocab * spec.model.shape.hidden * spec.compute_bytes)
        out.extend(litgpt_caveats(row, spec.method, modelled=spec.framework == "litgpt", head_gib=head_gib))
    if framework_key(row) == "hf-trainer":
        out.extend(hf_trainer_caveats(row, spec))
    if output_lora:
        logits_lora = alloc_gib(spec.tokens * spec.model.shape.vocab * 2)
        out.append(
            (
                f"LoRA on the output projection not expressible; planned without it (its b*s*V bf16 branch "
                f"output alone is {logits_lora:.2f} GiB)",
                False,
            )
        )
    if spec.method == "full" and spec.optimizer == "adamw" and spec.offload == "none":  # offload: a CPU step
        out.append(_foreach_adamw(spec, "torchtune's " if framework_key(row) == "torchtune" else "the run's "))
    return out


SEQ_SENSITIVE = 0.05
"""A truncation-bound row is material when the plan at half the bound is lower by more than this
share of the published figure: the unknown real length could then explain the error."""


def _seq_bound(spec: TrainSpec, published: int | None) -> tuple[str, bool]:
    """Dynamic padding to a truncation bound: the real batches may have been shorter. The plan at
    half the bound shows how much that uncertainty is worth for this row."""
    from lora_budget.core.model import peak_model

    model = peak_model(spec)
    full = model.fit_bytes(spec.batch_size, spec.seq_len)  # allocator-visible: paged state excluded
    half = model.fit_bytes(spec.batch_size, max(1, spec.seq_len // 2))
    drop = full - half
    material = published is not None and drop > SEQ_SENSITIVE * published
    return (
        f"seq {spec.seq_len} is a truncation bound with dynamic padding, so the plan is an upper bound "
        f"(plan at seq {spec.seq_len // 2}: {alloc_gib(half):.2f} GiB)",
        material,
    )


def alloc_gib(nbytes: int) -> float:
    return nbytes / GiB


def _qlora_caveats(spec: TrainSpec, row: dict[str, str]) -> list[tuple[str, bool]]:
    """torchtune quantizes with torchao NF4 only the linears it wraps in LoRA; the spec quantizes every linear."""
    from lora_budget.core.lora import resolve_targets
    from lora_budget.core.params import inventory

    out = [("torchao NF4 (block 64, 8-bit scales) taken as bitsandbytes NF4 with double quantization", False)]
    chosen = set(resolve_targets(spec.model.shape, spec.targets, spec.rank))
    unwrapped = [t for t in inventory(spec.model.shape) if t.role == "linear" and t.name not in chosen]
    if unwrapped:
        numel = sum(t.total_numel for t in unwrapped)
        # bf16 (2 bytes) in torchtune vs NF4 + double-quant state (4.127 bits) in the plan
        extra = numel * (2 - 4.127 / 8)
        published = published_bytes(row) or 1
        names = ", ".join(sorted({t.name for t in unwrapped}))
        out.append(
            (
                f"{names} not LoRA-wrapped, so torchtune keeps it bf16 where the plan has NF4: "
                f"+{alloc_gib(int(extra)):.2f} GiB in the published run",
                extra > 0.01 * published,
            )
        )
    return out


def _foreach_adamw(spec: TrainSpec, owner: str) -> tuple[str, bool]:
    """torch.optim.AdamW without ``fused=True`` runs the foreach path on CUDA, whose step holds
    ``torch._foreach_sqrt(exp_avg_sqs)`` (planned as ``adamw_foreach``). Where the row's releases do not
    settle which path ran, the plan keeps fused AdamW and this caveat gives the foreach plan; material
    if it would move the peak."""
    from lora_budget.core.model import peak_model

    fused = peak_model(spec).peak_bytes(spec.batch_size, spec.seq_len)
    foreach_model = peak_model(_replace(spec, optimizer="adamw_foreach"))
    foreach = foreach_model.peak_bytes(spec.batch_size, spec.seq_len)
    copy = foreach_model.static.optimizer_step_temp
    moves = foreach > fused
    where = f"the plan would be {alloc_gib(foreach):.2f} GiB" + (" (the step sets the peak)" if moves else "")
    return (
        f"if {owner}AdamW ran unfused (foreach), its step holds one more copy of the second moment "
        f"({alloc_gib(copy):.2f} GiB): {where}",
        moves,
    )
