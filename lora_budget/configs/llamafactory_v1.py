"""LLaMA-Factory's v1 schema (``llamafactory.v1``): ``model:``, ``peft_config:``, ``quant_config:``,
``dist_config:``, ``kernel_config:``, ``micro_batch_size:``.

Keys and defaults from LLaMA-Factory v0.9.5 ``src/llamafactory/v1/config/model_args.py`` and
``training_args.py``: ``micro_batch_size`` 1, ``cutoff_len`` 2048, ``bf16`` True,
``enable_activation_checkpointing`` True; ``peft_config`` None is full fine-tuning, ``name: lora``
with ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules`` (``all``), ``name: freeze``;
``quant_config`` ``name: bnb|auto`` with ``quantization_bit`` 4 or 8; ``dist_config`` ``name:
fsdp2|deepspeed`` (``config_file``), ``cp_size``; ``kernel_config`` ``name: liger_kernel|auto``.
The v1 trainer is LLaMA-Factory's own loop (``v1/core/base_trainer.py``), not transformers' Trainer:
it is planned as the plain loop (no Trainer autocast).
"""

from __future__ import annotations

from typing import Any

from lora_budget.configs import parallel
from lora_budget.configs.values import OPTIMIZER_NAMES, Reader

V1 = "LLaMA-Factory v0.9.5 v1"


def _section(r: Reader, key: str) -> dict[str, Any] | None:
    r.used.add(key)
    v = r.data.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise r.fail(key, f"must be a mapping with a name, got {v!r}")
    return v


def _name(r: Reader, key: str, section: dict[str, Any]) -> str:
    name = section.get("name")
    if not isinstance(name, str) or not name.strip():
        raise r.fail(f"{key}.name", f"must be a non-empty string, got {name!r}")
    return name.strip().lower()


def read(r: Reader) -> None:
    r.model("model")
    if "framework" not in r.typed:
        r.set("framework", "plain", "(LLaMA-Factory v1: its own loop, v1/core/base_trainer.py)")
    peft = _section(r, "peft_config")
    quant = _section(r, "quant_config")
    if not r.typed_over("method", "peft_config", "quant_config"):
        _method(r, peft, quant)
    if peft is not None and _name(r, "peft_config", peft) == "lora":
        _lora(r, peft)
    if quant is not None:
        _quant_options(r, quant)
    if not r.typed_over("seq_len", "cutoff_len"):
        seq = r.positive_int("cutoff_len")
        r.set("seq_len", seq or 2048, "cutoff_len" if seq else f"cutoff_len ({V1} default)")
    if not r.typed_over("batch_size", "micro_batch_size"):
        b = r.positive_int("micro_batch_size")
        r.set("batch_size", str(b or 1), "micro_batch_size" if b else f"micro_batch_size ({V1} default)")
    if not r.typed_over("dtype", "bf16"):
        bf16 = r.flag("bf16")
        r.set("dtype", "fp32" if bf16 is False else "bf16", "bf16" if bf16 is not None else f"bf16 ({V1} default)")
    key = "enable_activation_checkpointing"
    if not r.typed_over("grad_ckpt", key):
        on = r.flag(key)
        r.set("grad_ckpt", on is not False, key if on is not None else f"{key} ({V1} default)")
    if not r.typed_over("attn", "flash_attn") and (attn := r.text("flash_attn")) is not None:
        mapped = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash", "fa2": "flash"}.get(attn.lower())
        if mapped is None:
            raise r.fail(  # model_args.py AttentionFunction: LLaMA-Factory refuses other names too
                "flash_attn", f"must be eager, sdpa or flash_attention_2, got {attn!r} (or pass --attn)"
            )
        r.set("attn", mapped, "flash_attn")
    _optimizer(r)
    _kernels(r)
    r.parallel = _dist(r)
    if (epochs := r.positive_number("num_train_epochs")) is not None:
        r.set("epochs", epochs, "num_train_epochs")


def _method(r: Reader, peft: dict[str, Any] | None, quant: dict[str, Any] | None) -> None:
    bits = None
    if quant is not None:
        qname = _name(r, "quant_config", quant)
        if qname not in ("bnb", "auto"):
            raise r.fail("quant_config.name", f"{qname!r} is not modelled; only bitsandbytes (bnb); or pass --method")
        bits = quant.get("quantization_bit", 4 if qname == "bnb" else None)
        if bits not in (4, 8):
            raise r.fail("quant_config.quantization_bit", f"must be 4 or 8, got {bits!r}")
    if peft is None:
        if bits:
            raise r.fail("quant_config", "full fine-tuning of a quantized model is not possible; add a peft_config")
        r.set("method", "full", "peft_config (none: full fine-tuning)")
        return
    name = _name(r, "peft_config", peft)
    if name != "lora":
        raise r.fail("peft_config.name", f"{name!r} is not modelled; use lora, or pass --method")
    r.set("method", {None: "lora", 4: "qlora", 8: "lora8bit"}[bits], "quant_config" if bits else "peft_config")


def _quant_options(r: Reader, quant: dict[str, Any]) -> None:
    """``quantization_type`` (default nf4) and ``double_quantization`` (default true): v1
    plugins/model_plugins/quantization.py; other keys of the section are not modelled."""
    qtype = quant.get("quantization_type")
    if qtype is not None and "quant" not in r.typed:
        if str(qtype).lower() not in ("nf4", "fp4"):
            raise r.fail("quant_config.quantization_type", f"must be nf4 or fp4, got {qtype!r}")
        r.set("quant", str(qtype).lower(), "quant_config.quantization_type")
    dq = quant.get("double_quantization")
    if dq is not None and "double_quant" not in r.typed:
        if not isinstance(dq, bool):
            raise r.fail("quant_config.double_quantization", f"must be true or false, got {dq!r}")
        r.set("double_quant", dq, "quant_config.double_quantization")
    known = ("name", "quantization_bit", "quantization_type", "double_quantization")
    if other := [k for k in quant if k not in known]:
        r.notes.append(f"quant_config: {', '.join(other)} not modelled (planned with the 4-bit defaults)")


def _lora(r: Reader, peft: dict[str, Any]) -> None:
    def number(key: str, kind: type) -> Any:
        v = peft.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise r.fail(f"peft_config.{key}", f"must be a non-negative finite number, got {v!r}")
        return kind(v)

    if not r.typed_over("rank", "peft_config") and (rank := number("r", int)):
        r.set("rank", rank, "peft_config.r")
    if not r.typed_over("alpha", "peft_config") and (alpha := number("lora_alpha", float)):
        r.set("alpha", max(1, round(alpha)), "peft_config.lora_alpha")
    if not r.typed_over("lora_dropout", "peft_config") and (p := number("lora_dropout", float)) is not None:
        if p >= 1:
            raise r.fail("peft_config.lora_dropout", f"must be a probability in [0, 1), got {p!r}")
        r.set("lora_dropout", p, "peft_config.lora_dropout")
    read = ("name", "r", "lora_alpha", "lora_dropout", "target_modules")
    no_effect = ("adapter_name_or_path", "export_dir", "export_size", "infer_dtype")  # loading and export
    if other := [k for k in peft if k not in read + no_effect and peft[k] not in (None, False)]:
        r.notes.append(f"peft_config: {', '.join(other)} not modelled (planned as plain LoRA)")
    if r.typed_over("targets", "peft_config"):
        return
    targets = peft.get("target_modules")
    if targets is None or (isinstance(targets, str) and targets.strip().lower() in ("all", "all-linear")):
        r.set("targets", "all-linear", "peft_config.target_modules")
    elif isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        r.set("targets", ",".join(t.strip() for t in targets), "peft_config.target_modules")
    elif isinstance(targets, str) and targets.strip():
        r.set("targets", ",".join(t.strip() for t in targets.split(",") if t.strip()), "peft_config.target_modules")
    else:
        raise r.fail("peft_config.target_modules", f"must be all or a list of module names, got {targets!r}")


def _optimizer(r: Reader) -> None:
    optim = _section(r, "optim_config")
    if optim is None or r.typed_over("optimizer", "optim_config"):
        return
    name = _name(r, "optim_config", optim)
    if (ours := OPTIMIZER_NAMES.get(name)) is None:
        raise r.fail("optim_config.name", f"optimizer {name!r} is not modelled; pass --optimizer")
    r.set("optimizer", ours, "optim_config.name")


def _kernels(r: Reader) -> None:
    kernels = _section(r, "kernel_config")
    if kernels is None:
        return
    name = _name(r, "kernel_config", kernels)
    r.nested_unknown.extend(f"kernel_config.{k}" for k in kernels if k not in ("name", "include_kernels"))
    if name == "liger_kernel" and "loss" not in r.typed:
        r.set("loss", "fused-ce", "kernel_config.name: liger_kernel")
    elif name == "auto":
        r.notes.append(
            "kernel_config: auto picks kernels by what is installed (possibly Liger's fused cross-entropy, "
            "which never materializes the logits); not modelled: planned with the transformers kernels"
        )


def _dist(r: Reader) -> str:
    dist = _section(r, "dist_config")
    if dist is None:
        return ""
    name = _name(r, "dist_config", dist)
    known = ("name", "config_file", "cp_size", "cp_mode", "dcp_path")  # dcp_path: where checkpoints go
    r.nested_unknown.extend(f"dist_config.{k}" for k in dist if k not in known)
    if dist.get("cp_size") not in (None, 1):
        r.notes.append(
            f"dist_config.cp_size: {dist['cp_size']} not modelled: context parallelism splits each sequence "
            "across GPUs (planned whole on one GPU, an over-estimate of activations)"
        )
    if name == "fsdp2":
        r.set("strategy", "fsdp", "dist_config.name: fsdp2")
        return "dist_config: FSDP2 (fully sharded) read from dist_config"
    if name == "deepspeed":
        if not isinstance(dist.get("config_file"), str):
            raise r.fail("dist_config.config_file", "a DeepSpeed dist_config needs config_file: <ds.json>")
        return parallel._deepspeed(r, dist["config_file"])
    raise r.fail("dist_config.name", f"{name!r} is not modelled; use fsdp2 or deepspeed")
