"""Which training stack a published row ran, the mechanisms it used, and LitGPT's side of the mapping.

The original data set (``data/published-memory.csv``) names its stack in free text (``framework``);
the rows added since (``data/published-memory-added.csv``) also carry a ``framework_key`` and one
column per memory mechanism, so that each mechanism can be checked against the rows that used it.
Nothing here is fitted to the published figures; the caveats only say what the plan leaves out.
Sources for every LitGPT statement: Lightning-AI/litgpt at 00af8b0d (2024-09-27), files named below.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec

MECHANISM_COLUMNS: tuple[str, ...] = (
    "framework_key",
    "lora_dropout",
    "loss_kernel",
    "precision_mode",
    "qkv_fused",
    "kbit_prep",
    "torch_compile",
    "lib_versions",
    "mechanism_notes",
)
"""Columns that ``published-memory-added.csv`` has beyond the original ones (meanings in data/README.md)."""

FRAMEWORK_KEYS: tuple[str, ...] = ("plain", "hf-trainer", "litgpt", "torchtune", "unsloth")

_FREE_TEXT: tuple[tuple[str, str], ...] = (
    ("torchtune", "torchtune"),
    ("litgpt", "litgpt"),
    ("hf trainer", "hf-trainer"),
    ("unsloth", "unsloth"),
    ("accelerate", "plain"),
)
"""The original rows' ``framework`` text -> key: torchtune's recipes; the transformers docs' Trainer runs;
PEFT's README scripts are hand-written accelerate loops (``accelerator.backward`` in a for loop)."""


def framework_key(row: dict[str, str]) -> str:
    """The row's ``framework_key`` where it has one, else the key its ``framework`` text names."""
    stated = row.get("framework_key", "null").strip()
    if stated not in ("", "null"):
        if stated not in FRAMEWORK_KEYS:
            raise LoraBudgetError(f"row {row['id']}: unknown framework_key {stated!r}")
        return stated
    text = row["framework"].lower()
    for marker, key in _FREE_TEXT:
        if marker in text:
            return key
    raise LoraBudgetError(f"row {row['id']}: cannot tell the framework from {row['framework']!r}")


def mechanisms(row: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(column, value) for each mechanism column the row states (``null`` left out)."""
    return tuple((c, row[c].strip()) for c in MECHANISM_COLUMNS[1:] if c in row and row[c].strip() not in ("", "null"))


LITGPT_ALL = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
FUSED_QKV = ("query_key_value", "qkv_proj")


def litgpt_targets(names: tuple[str, ...], linears: tuple[str, ...]) -> tuple[str, str | None]:
    """(spec targets, caveat) for LitGPT's ``lora_query/key/value/projection/mlp`` flags.

    ``names`` are the flags as transformers Llama names (``published_map.lora_targets``). Every flag
    set is every decoder linear (``all-linear``). LitGPT always fuses q, k, v into one ``attn``
    Linear and adapts it with one ``LoRAQKVLinear`` (litgpt/lora.py 175-435): where the catalog model
    is fused too (Falcon's query_key_value, Phi-3's qkv_proj) q+v are planned as that projection.
    """
    if set(names) == LITGPT_ALL:
        return "all-linear", None
    fused = [f for f in FUSED_QKV if f in linears]
    if fused and set(names) <= {"q_proj", "k_proj", "v_proj"}:
        return fused[0], (
            f"LitGPT adapts only the {'+'.join(n[0] for n in names)} parts of the fused qkv projection "
            f"(A has {len(names)}r rows, B only their outputs); planned as LoRA on all of {fused[0]}"
        )
    missing = [n for n in names if n not in linears]
    if missing:
        raise LoraBudgetError(f"LoRA targets {', '.join(missing)} are not linears of this model")
    return ",".join(names), None


LONGEST_FIRST = "first iteration forces the longest"
"""What a row's ``seq_len_kind`` says when its loop is lit-gpt's 2023 ``finetune/lora.py``, which puts
the longest sample in iteration 0 (``get_batch(..., longest_seq_ix if iter_num == 0 else None)``)."""


def litgpt_fields(
    names: tuple[str, ...], output_lora: bool, shape: object, method: str, row: dict[str, str] | None = None
) -> dict[str, object] | None:
    """Spec fields that plan a LitGPT LoRA / QLoRA row with ``framework="litgpt"`` (core/litgpt.py),
    or None where that walk does not cover the row (full fine-tuning, another LitGPT block).

    ``names`` are the row's ``lora_query/key/value/projection/mlp`` flags as transformers Llama names
    and ``output_lora`` its ``lora_head``; core/litgpt.py reads both as LitGPT's flags. A row whose
    longest batch runs once, first (``LONGEST_FIRST``), has nothing of a previous step alive at its
    peak (``previous_step=False``).
    """
    from lora_budget.core.litgpt import SUPPORTED

    if method == "full" or getattr(shape, "model_type", "") not in SUPPORTED:
        return None
    out: dict[str, object] = {"framework": "litgpt", "targets": ",".join(names + (("lm_head",) if output_lora else ()))}
    if row is not None and LONGEST_FIRST in row.get("seq_len_kind", ""):
        out["previous_step"] = False
    return out


LITGPT_RUN = (
    "LitGPT prints max_memory_allocated over the whole fit (finetune/lora.py 234); planned: the step as "
    "Fabric runs it (_FabricModule casts the logits chunks to fp32, lightning 2.4 fabric/wrappers.py 143; "
    "the previous step's logits alive through the next forward) and the validate it runs every "
    "eval.interval steps; the model load and generate_example (batch 1) peak below them, not planned"
)


LITGPT_FSDP_RUN = (
    "whole-run figure under FSDP: the resource table's 2-GPU Llama 2 7B figures (22.18, 22.47 GB) are above its "
    "1-GPU ones (21.30 GB at micro-batch 1) although each rank holds half the weights, so the printed peak lies "
    "outside the training step (model setup and checkpoint load under FSDP); not planned"
)


@lru_cache(maxsize=1)
def _litgpt_traces() -> dict[int, tuple[int, str]]:
    """Row id -> (traced bytes, op at the peak) from ``data/litgpt-published-traces.json``: LitGPT's own
    step traced at each published row's configuration (``runtime/litgpt.py`` ``write_published``)."""
    import json
    from pathlib import Path

    path = Path(__file__).parent / "data" / "litgpt-published-traces.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {r["id"]: (r["traced_peak_bytes"], r["traced_at"]) for r in rows}


def litgpt_trace_note(row: dict[str, str]) -> str | None:
    """The stored trace of LitGPT's own code at the row's configuration, against its figure."""
    traced = _litgpt_traces().get(int(row["id"]))
    if traced is None or row.get("memory_gib", "null").strip() in ("", "null"):
        return None
    gib = traced[0] / 2**30
    error = gib / float(row["memory_gib"]) - 1
    return (
        f"LitGPT's own code traced at this configuration (runtime/litgpt.py, accumulation 1): {gib:.2f} GiB, "
        f"{error:+.1%} of the published figure, peak at {traced[1]} (data/litgpt-published-traces.json)"
    )


def litgpt_caveats(
    row: dict[str, str], method: str, modelled: bool = False, head_gib: float = 0.0
) -> list[tuple[str, bool]]:
    """What LitGPT's run does that the spec does not say (none is material: these rows exist to
    measure the mechanisms; except the resource table's FSDP rows, whose figure is not the step's).
    ``modelled``: the row is planned with ``framework="litgpt"``, whose step has LitGPT's dropout,
    loss, Fabric's fp32 outputs, kept logits, 4-bit head and validation (core/litgpt.py)."""
    if modelled:
        out = [(LITGPT_RUN, False)]
        if LONGEST_FIRST in row.get("seq_len_kind", ""):
            out.append(
                (
                    "lit-gpt's 2023 loop runs the longest sample in iteration 0 and validates before training: "
                    "planned with nothing of a previous step alive (previous_step=False)",
                    False,
                )
            )
        if method == "qlora" and head_gib:
            out.append(
                (
                    "Lightning's _Linear4bit.quantize quantizes from fp16 (fabric/plugins/precision/bitsandbytes.py "
                    "334), so bitsandbytes 0.42.0's MatMul4Bit dequantizes each weight to fp16 and then copies it "
                    f"to bf16 (autograd/_functions.py 516, 546): two {head_gib:.2f} GiB copies of lm_head at once; "
                    "its ctx.tensors = (A, B) keeps every 4-bit matmul input until the step's graph goes "
                    "(after the next forward); both planned and traced (0.42.0's MatMul4Bit restated)",
                    False,
                )
            )
        note = litgpt_trace_note(row)
        return out + ([(note, False)] if note else [])
    out: list[tuple[str, bool]] = [
        (
            "LitGPT's block for this model (or `finetune full`, or its multi-GPU / checkpointed path) is not walked "
            "by --framework litgpt; planned with transformers' layout",
            False,
        )
    ]
    note = litgpt_trace_note(row)
    out += [(note, False)] if note else []
    if "resource-tables" in row["source"] and row["num_gpus"].strip() not in ("", "null", "1"):
        out.append((LITGPT_FSDP_RUN, True))
    p = row.get("lora_dropout", "null").strip()
    if method != "full" and p not in ("", "null", "0", "0.0"):
        out.append(
            (
                f"LoRA dropout p={p} planned as peft's, one dropped copy and mask per adapted layer; LitGPT "
                "drops the fused qkv input once (litgpt/lora.py 426), so the plan counts q, k, v's twice more",
                False,
            )
        )
    out.append(
        (
            "LitGPT's chunked_cross_entropy on bf16 logits, no fp32 upcast (litgpt/utils.py 293); "
            "the plan has transformers' fp32 loss",
            False,
        )
    )
    out.append(
        (
            "the previous step's logits stay referenced while the next forward runs "
            "(`logits = model(...)` rebinds after it, finetune/lora.py 304); not in the plan",
            False,
        )
    )
    if method == "qlora":
        out.append(
            (
                "lm_head is 4-bit too (Fabric's BitsandbytesPrecision converts every nn.Linear) and dequantized "
                "each step; not in the plan (bitsandbytes 0.42.0's kept matmul inputs are)",
                False,
            )
        )
    return out


def _transformers_version(row: dict[str, str]) -> tuple[int, int] | None:
    """(major, minor) of the transformers release the row's ``lib_versions`` names, or None."""
    found = re.search(r"transformers (\d+)\.(\d+)", row.get("lib_versions", "") or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


NF4_DQ_BYTES = 4.127 / 8
"""Bytes per weight of NF4 with double quantization (4 bits + 8/64 + 32/(64*256)), as the plan counts it."""


def hf_trainer_caveats(row: dict[str, str], spec: TrainSpec) -> list[tuple[str, bool]]:
    """What a Trainer run of the row's (older) library versions did that the spec does not say.

    - transformers 4.x builds each Mixtral expert from ``nn.Linear`` modules (w1, w2, w3 of
      ``MixtralBlockSparseTop2MLP``), which bitsandbytes replaces by ``Linear4bit``; transformers 5
      stores experts as 3-D parameters that bitsandbytes leaves 16-bit, as the plan has them.
    - TRL's SFTTrainer (0.x) follows ``prepare_model_for_kbit_training`` with
      ``peft_module_casting_to_bf16`` when ``bf16=True`` (trl/trainer/utils.py, v0.13.0 line 872):
      embed_tokens and lm_head go back to bf16, so the plan's fp32 copies of them are too many.
    - transformers before 4.49 computes the causal-LM loss on ``logits[..., :-1, :].contiguous()``,
      a shifted fp32 copy of the upcast logits (transformers#35646 shifts the labels instead).
    The first and the third are planned when the spec carries the row's transformers release
    (``TrainSpec.transformers``, set from ``lib_versions``); the caveats remain for a spec without it.
    - transformers 4.x ``gradient_checkpointing_enable`` defaults to ``use_reentrant=True``.
    """
    from lora_budget.core.params import inventory

    out: list[tuple[str, bool]] = []
    version = _transformers_version(row)
    tensors = inventory(spec.model.shape)
    if spec.method == "qlora" and version and version < (5, 0) and not spec.experts_quantized:
        experts = sum(t.total_numel for t in tensors if t.role == "experts")
        if experts:
            planned = 4 if spec.kbit_prep else spec.compute_bytes  # kbit prep upcasts the 16-bit experts
            extra = experts * (planned - NF4_DQ_BYTES) / 2**30
            out.append(
                (
                    f"transformers {version[0]}.{version[1]} builds each MoE expert from nn.Linear modules, which "
                    "bitsandbytes quantizes to NF4; transformers 5 keeps experts as 3-D 16-bit parameters, as "
                    f"planned: the plan holds {extra:.2f} GiB more expert weights than the run",
                    True,
                )
            )
    if "peft_module_casting_to_bf16" in row.get("kbit_prep", "") and spec.kbit_prep:
        numel = sum(t.total_numel for t in tensors if t.role in ("embedding", "lm_head"))
        out.append(
            (
                "TRL's peft_module_casting_to_bf16 casts embed_tokens and lm_head back to bf16 after kbit prep: "
                f"the plan's fp32 copies of them are {numel * 2 / 2**30:.2f} GiB more than the run's",
                False,
            )
        )
    if version and version < (4, 49) and spec.transformers_version >= (4, 49):  # planned when the spec has it
        copy = spec.batch_size * (spec.seq_len - 1) * spec.model.shape.vocab * 4 / 2**30
        out.append(
            (
                f"transformers {version[0]}.{version[1]}'s causal-LM loss upcasts the logits and then takes "
                "shift_logits = logits[..., :-1, :].contiguous(), one more fp32 copy of them "
                f"({copy:.2f} GiB) at the loss than transformers 5 (shifted labels, transformers#35646, "
                "merged 2025-01-13, after the 4.48.0 release); not planned",
                False,
            )
        )
    if "reentrant" in row.get("mechanism_notes", "").lower() and spec.grad_ckpt:
        note = (
            "reentrant activation checkpointing (transformers 4.x default use_reentrant=True); planned as non-reentrant"
        )
        out.append((note, False))
    return out
