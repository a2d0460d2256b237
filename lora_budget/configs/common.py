"""Readers' helpers for keys several tools share: LoRA rank/alpha/dropout, precision flags, checkpointing."""

from __future__ import annotations

from lora_budget.configs.objectives import objective
from lora_budget.configs.values import Reader

DTYPE_NAMES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "fp16": "fp16",
    "float32": "fp32",
    "fp32": "fp32",
}


def alpha(r: Reader, key: str) -> None:
    value = r.positive_number(key)
    if value is not None:
        r.set("alpha", max(1, round(value)), key)


def rank_alpha_dropout(r: Reader, rank_key: str) -> None:
    """LoRA rank (under each tool's name), ``lora_alpha`` and ``lora_dropout``."""
    if not r.typed_over("rank", rank_key) and (rank := r.positive_int(rank_key)) is not None:
        r.set("rank", rank, rank_key)
    alpha(r, "lora_alpha")
    dropout(r, "lora_dropout")


def quant_type(r: Reader, key: str) -> None:
    if r.typed_over("quant", key):
        return
    if (qtype := r.text(key)) is not None:
        if qtype.lower() not in ("nf4", "fp4"):
            raise r.fail(key, f"must be nf4 or fp4, got {qtype!r}")
        r.set("quant", qtype.lower(), key)


def dropout(r: Reader, key: str) -> None:
    if r.typed_over("lora_dropout", key):
        return
    if r.has(key):
        v = r.raw(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise r.fail(key, f"must be a probability in [0, 1), got {v!r}")
        r.set("lora_dropout", float(v), key)
    r.used.add(key)


def precision(r: Reader, bf16: str = "bf16", fp16: str = "fp16", both_off: str | None = "fp32") -> None:
    """``bf16`` / ``fp16`` Trainer flags; both false is fp32 (``both_off``) unless the tool infers a dtype."""
    if r.typed_over("dtype", bf16, fp16):
        return
    b, f = r.flag(bf16), r.flag(fp16)
    if b and f:
        raise r.fail(bf16, f"{bf16} and {fp16} are both true; choose one")
    if b:
        r.set("dtype", "bf16", bf16)
    elif f:
        r.set("dtype", "fp16", fp16)
    elif b is False and f is False and both_off:
        r.set("dtype", both_off, bf16)


def grad_ckpt(r: Reader, key: str) -> None:
    """``gradient_checkpointing``; axolotl's ``offload`` / ``offload_disk`` (each layer's checkpoint moved
    to CPU memory or disk by its offloaded checkpoint function) is ``--grad-ckpt --ckpt-offload``: on
    the device both keep only the layer being recomputed."""
    if r.typed_over("grad_ckpt", key):
        return
    if r.has(key) and isinstance(v := r.data[key], str) and v.strip().lower() in ("offload", "offload_disk"):
        r.used.add(key)
        r.set("grad_ckpt", True, key)
        if not r.typed_over("ckpt_offload", key):
            r.set("ckpt_offload", True, key)
        return
    if (ckpt := r.flag(key)) is not None:
        r.set("grad_ckpt", ckpt, key)


def activation_offloading(r: Reader, key: str = "activation_offloading") -> None:
    """``activation_offloading``: TRL's SFTConfig key (v1.9.0 ``sft_trainer.py`` runs each
    ``training_step`` inside ``get_act_offloading_ctx_manager``) and axolotl's, whose
    ``ActivationOffloadingMixin`` runs TRL's ``OffloadActivations`` (``core/trainers/mixins/
    activation_checkpointing.py``): ``--activation-offload``. axolotl's ``disk`` keeps TRL's rules
    (the host copy goes to disk); ``legacy`` (no CUDA streams, no forward stash) keeps fewer tensors
    on the device than planned; ``hidden_states`` offloads only the checkpointed hidden states."""
    if r.typed_over("activation_offload", key) or not r.has(key):
        r.used.add(key)
        return
    v = r.raw(key)
    mode = v.strip().lower() if isinstance(v, str) else None
    if mode in ("disk", "legacy"):
        r.set("activation_offload", True, key)
        if mode == "legacy":
            r.notes.append(
                f"{key}: legacy (synchronous, no forward stash) planned with the streamed rules: the plan "
                "keeps up to five offloaded tensors' device copies it does not (an over-estimate)"
            )
        return
    if mode == "hidden_states":
        r.notes.append(
            f"{key}: hidden_states not modelled: planned with the checkpoints kept on the GPU (it moves the "
            "checkpointed hidden states to CPU memory, lowering the planned activations)"
        )
        return
    if (on := r.flag(key)) is not None:
        r.set("activation_offload", on, key)


def grad_ckpt_kwargs(r: Reader, key: str = "gradient_checkpointing_kwargs") -> None:
    """``{use_reentrant: false}`` is the checkpointing the planner models; other options become a note."""
    r.used.add(key)
    kwargs = r.data.get(key)
    if kwargs in (None, {}) or "grad_ckpt" in r.typed:
        return
    if not isinstance(kwargs, dict):
        raise r.fail(key, f"must be a mapping such as {{use_reentrant: false}}, got {kwargs!r}")
    reentrant = kwargs.get("use_reentrant")
    if reentrant is True or str(reentrant).lower() == "true":
        r.notes.append(
            f"{key}: use_reentrant true not modelled: planned as non-reentrant checkpointing (both keep each "
            "layer's input; the reentrant kind also makes the embedding output require grad, a small tensor)"
        )
    if other := sorted(str(k) for k in kwargs if k != "use_reentrant"):
        r.notes.append(f"{key}: {', '.join(other)} not modelled (planned with torch.utils.checkpoint's defaults)")


ATTN_NAMES = {
    "eager": ("eager", ""),
    "sdpa": ("sdpa", ""),
    "flash_attention_2": ("flash", ""),
    "flash_attention_3": ("flash", ""),
    "flex_attention": ("sdpa", "flex_attention planned as sdpa (neither keeps the s x s scores)"),
    "xformers": ("sdpa", "xformers planned as sdpa (neither keeps the s x s scores)"),
    "sage": ("flash", "SageAttention (8-bit QK) planned as flash attention"),
    "fp8": ("flash", "fp8 attention not modelled: planned as 16-bit flash attention"),
}
"""transformers' and axolotl's attention names (axolotl v0.18.0 ``utils/schemas/enums.py``
CANONICAL_ATTN_IMPLS) -> (our kernel, a note); a Hub kernel path (``kernels-community/flash-attn3``)
naming flash attention is flash."""


def attn_implementation(r: Reader, key: str = "attn_implementation", impl: str | None = None) -> None:
    """Map ``key`` (or ``impl``, a name another key implies) onto ``attn``."""
    if r.typed_over("attn", key) or (impl := impl or r.text(key)) is None:
        return
    low = impl.lower()
    if low in ATTN_NAMES:
        attn, note = ATTN_NAMES[low]
    elif "flash" in low:
        attn, note = "flash", ""
    else:
        names = ", ".join(ATTN_NAMES)
        raise r.fail(key, f"{impl!r} is not modelled; use one of {names} (or pass --attn)")
    r.set("attn", attn, key)
    if note:
        r.notes.append(f"{key}: {note}")


def trainer_eval(r: Reader) -> None:
    """Evaluation during training: transformers 5.24 ``training_args.py`` evaluates when ``eval_strategy``
    (older: ``evaluation_strategy``) is steps or epoch (default no; ``do_eval`` alone does not), at
    ``per_device_eval_batch_size`` (default 8). Planned for SFT (``spec.eval_batch_size``)."""
    keys = ("eval_strategy", "evaluation_strategy", "per_device_eval_batch_size", "do_eval")
    if r.typed_over("eval_batch_size", *keys):
        return
    key = "eval_strategy" if r.has("eval_strategy") else "evaluation_strategy"
    strategy = r.text(key)
    r.used.update(keys)
    if strategy is None or strategy.lower() == "no":
        return
    if strategy.lower() not in ("steps", "epoch"):
        raise r.fail(key, f"must be no, steps or epoch, got {strategy!r}")
    if objective(r.fmt, r.data)[0] != "sft":
        r.notes.append(f"{key}: {strategy}: evaluation is planned for SFT only; not planned for this objective")
        return
    b = r.positive_int("per_device_eval_batch_size")
    source = "per_device_eval_batch_size" if b else f"per_device_eval_batch_size (transformers default, {key})"
    r.set("eval_batch_size", b or 8, source)
