"""Spec options shared by plan (and later trace, profile and check)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import (
    ATTENTIONS,
    DTYPES,
    FRAMEWORKS,
    LOSSES,
    METHODS,
    OBJECTIVES,
    OFFLOADS,
    OPTIMIZERS,
    REFERENCES,
    STRATEGIES,
)

MODEL_HELP = (
    "Catalog name, alias, HF repo id, config.json path or model directory. Aliases: 7b = Llama-2-7B, "
    "13b = Llama-2-13B, 8b = Llama-3.1-8B, 70b = Llama-3.1-70B, 405b = Llama-3.1-405B, 1b = Llama-3.2-1B, "
    "3b = Llama-3.2-3B, 8x7b = Mixtral-8x7B (see `lora-budget models`)."
)


CONFIG_META = "lora_budget.config"
"""``click`` context ``meta`` key holding the notes of the ``--config`` file a command read."""

CONFIG_HELP = (
    "Read settings from a training config: axolotl or LLaMA-Factory YAML, TRL/transformers training "
    "arguments (JSON or YAML), PEFT adapter_config.json, a model config.json, or a DeepSpeed JSON. DeepSpeed "
    "and FSDP settings apply with --gpus N. Flags you give win."
)


def _set_offline(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--offline``: huggingface_hub's own switch, which model resolution reads, for this run."""
    if value:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"


def spec_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the spec options (and ``--config FILE``) to a command; file values fill what the user did not type."""

    @functools.wraps(fn)
    def with_config(*args: Any, **kw: Any) -> Any:
        path = kw.pop("config_file", None)
        if path is None:
            return fn(*args, **kw)
        try:
            applied = apply_config(path, kw)
        except LoraBudgetError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            return fn(*args, **applied)
        except click.UsageError as exc:
            exc.message = f"{exc.message} (settings read from {path})"
            raise

    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP),
        click.option("--model", "-m", default="7b", show_default=True, help=MODEL_HELP),
        click.option(
            "--offline",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set_offline,
            help="Never ask the Hugging Face Hub for a config.json (as HF_HUB_OFFLINE=1).",
        ),
        click.option(
            "--method",
            default="all",
            show_default=True,
            help=f"One of {', '.join(METHODS)}, a comma list, or all (full, lora, qlora side by side).",
        ),
        click.option("--seq-len", "-s", type=int, default=2048, show_default=True, help="Tokens per sequence."),
        click.option(
            "--batch-size",
            "-b",
            default="1",
            show_default=True,
            help="Micro-batch size, or auto for the largest that fits.",
        ),
        click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step."),
        click.option("--rank", "-r", type=int, default=16, show_default=True, help="LoRA rank."),
        click.option("--alpha", type=int, default=32, show_default=True, help="LoRA alpha (no effect on memory)."),
        click.option(
            "--targets",
            default="all-linear",
            show_default=True,
            help="LoRA targets: all-linear, attn, mlp, or module names (q_proj,v_proj).",
        ),
        click.option(
            "--quant", type=click.Choice(["nf4", "fp4"]), default="nf4", show_default=True, help="QLoRA 4-bit type."
        ),
        click.option("--quant-blocksize", type=int, default=64, show_default=True, help="QLoRA weights per absmax."),
        click.option(
            "--double-quant/--no-double-quant", default=True, show_default=True, help="QLoRA nested quantization."
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default="adamw",
            show_default=True,
            help="adamw is torch's fused AdamW; 8-bit and paged ones are bitsandbytes'.",
        ),
        click.option("--grad-ckpt/--no-grad-ckpt", default=False, show_default=True, help="Gradient checkpointing."),
        click.option(
            "--attn", type=click.Choice(ATTENTIONS), default="sdpa", show_default=True, help="Attention kernel."
        ),
        click.option(
            "--dtype",
            type=click.Choice(DTYPES),
            default="bf16",
            show_default=True,
            help="Weight and compute dtype (QLoRA: compute dtype).",
        ),
        click.option(
            "--master-weights/--no-master-weights",
            default=False,
            show_default=True,
            help="Full fine-tuning: keep fp32 master weights (mixed precision).",
        ),
        click.option(
            "--adapter-dtype",
            type=click.Choice(DTYPES),
            default=None,
            help="LoRA weight dtype; default: the framework's (peft: fp32; litgpt: the model dtype).",
        ),
        click.option(
            "--framework",
            type=click.Choice(FRAMEWORKS),
            default="hf-trainer",
            show_default=True,
            help="Training code: plain (the reference loop), hf-trainer (transformers Trainer, TRL, axolotl, "
            "LLaMA-Factory: bf16/fp16 autocast), litgpt (LitGPT's model and finetune loop: fused qkv, bf16 "
            "adapters, chunked bf16 loss; targets as its flags query,key,value,projection,mlp,head), "
            "torchtune (chunked loss).",
        ),
        click.option(
            "--lora-dropout",
            type=float,
            default=0.0,
            show_default=True,
            help="LoRA dropout p; above 0 each adapted layer keeps a dropped copy of its input and a mask.",
        ),
        click.option(
            "--loss",
            type=click.Choice(LOSSES),
            default="auto",
            show_default=True,
            help="Loss kernel: full-ce (transformers), chunked-ce (torchtune), fused-ce (Liger / Cut "
            "Cross-Entropy); auto: the framework's.",
        ),
        click.option(
            "--autocast/--no-autocast",
            default=None,
            help="The forward under torch.autocast in the 16-bit dtype (Trainer bf16=True); default: on for "
            "hf-trainer.",
        ),
        click.option(
            "--bitsandbytes",
            default="0.50",
            show_default=True,
            help="bitsandbytes release; up to 0.43.1 every 4-bit matmul keeps its input for backward.",
        ),
        click.option(
            "--kbit-prep/--no-kbit-prep",
            default=None,
            help="QLoRA / 8-bit: peft's prepare_model_for_kbit_training ran (fp32 non-quantized weights and "
            "activations), as axolotl's QLoRA loader does.",
        ),
        click.option(
            "--objective",
            type=click.Choice(OBJECTIVES),
            default="sft",
            show_default=True,
            help="What the step trains, as TRL runs it: sft; dpo/ipo/orpo/simpo (chosen + rejected pairs); "
            "grpo (completions, logits for the completion only, a generation phase); reward (score head).",
        ),
        click.option(
            "--reference",
            type=click.Choice(REFERENCES),
            default="auto",
            show_default=True,
            help="dpo/ipo/grpo reference log-probs: adapter (adapters disabled), copy (a frozen model copy), "
            "precomputed, none; auto: TRL's default.",
        ),
        click.option(
            "--completion-len",
            type=int,
            default=0,
            help="grpo: completion tokens per sequence (max_completion_length; default 256); the prompt is the rest "
            "of --seq-len.",
        ),
        click.option(
            "--generations",
            type=int,
            default=8,
            show_default=True,
            help="grpo: completions per prompt (num_generations); --batch-size counts completions.",
        ),
        click.option(
            "--vllm/--no-vllm",
            default=False,
            help="grpo: completions from vLLM (its engine memory is not planned) instead of transformers' generate.",
        ),
        click.option(
            "--ckpt-offload/--no-ckpt-offload",
            default=False,
            help="With --grad-ckpt: checkpoints in host memory (Unsloth's offloaded checkpointing, axolotl's "
            "gradient_checkpointing: offload).",
        ),
        click.option(
            "--activation-offload/--no-activation-offload",
            default=False,
            help="Saved activations in host memory (TRL activation_offloading, torchtune "
            "enable_activation_offloading); traced by `trace`, not planned yet.",
        ),
        click.option(
            "--eval-batch-size",
            type=int,
            default=0,
            show_default=True,
            help="Sequences per evaluation step during training (Trainer per_device_eval_batch_size); its logits "
            "spike can be the run's peak. 0: no evaluation planned.",
        ),
        click.option(
            "--gpus",
            type=int,
            default=1,
            show_default=True,
            help="Data-parallel GPUs, each running --batch-size sequences; memory figures are per GPU.",
        ),
        click.option(
            "--strategy",
            type=click.Choice(STRATEGIES),
            default="ddp",
            show_default=True,
            help="With --gpus > 1: ddp replicates; zero1 shards optimizer state, zero2 also gradients, "
            "zero3 / fsdp (FSDP2) also parameters.",
        ),
        click.option(
            "--offload",
            type=click.Choice(OFFLOADS),
            default="none",
            show_default=True,
            help="optimizer: state and master weights in CPU memory (zero1/2/3); params: parameters too (zero3, fsdp).",
        ),
    ]
    for option in reversed(options):
        with_config = option(with_config)
    return with_config


def apply_config(path: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the config file's values for every parameter the user did not give on the command line.

    The file's notes go to ``click.get_current_context().meta[CONFIG_META]`` for the command to report.
    """
    from lora_budget.configs import load_config

    ctx = click.get_current_context()
    given = frozenset(p for p in kw if typed(p))
    loaded = load_config(path, typed=given)  # typed flags replace file values before they are validated
    if "model" in kw and "model" not in given:
        loaded.check_model()
    out = dict(kw)
    # A file's DeepSpeed / FSDP strategy shards over a world size only the launcher knows: without
    # --gpus N it is reported, not applied. Its offload belongs to its strategy, so a different
    # typed --strategy overrides both.
    held: tuple[str, ...] = ()
    if "strategy" in out and loaded.values.get("strategy", "ddp") != "ddp" and not typed("strategy"):
        gpus = out.get("gpus", 1) if typed("gpus") else loaded.values.get("gpus", out.get("gpus", 1))
        if gpus == 1:  # an accelerate config's num_processes is the world size
            held = tuple(p for p in ("strategy", "offload") if p in loaded.values)
    overridden = []
    for param, value in loaded.values.items():
        if param not in out or param in held:
            continue  # a setting this command has no option for (e.g. epochs outside plan), or held back
        if typed(param) or (param == "offload" and typed("strategy") and out["strategy"] != loaded.values["strategy"]):
            overridden.append(param)
            continue
        out[param] = config_model(loaded) if param == "model" else value
    overridden += [p for p in loaded.skipped if p not in overridden]
    if loaded.pattern_targets and "targets" in out and "targets" not in overridden and "model" in out:
        from lora_budget.configs.targets import fit_to_model

        try:  # a pattern adapts only the modules the model has
            out["targets"] = fit_to_model(out["targets"], out["model"])
        except LoraBudgetError as exc:
            raise LoraBudgetError(f"{path}: {loaded.pattern_targets}: {exc}") from None
    if loaded.default_targets and "targets" in out and "targets" not in overridden and "model" in out:
        from lora_budget.configs.targets import peft_default

        try:  # PEFT's default targets depend on the model type
            out["targets"] = peft_default(out["targets"], out["model"])
        except LoraBudgetError as exc:
            raise LoraBudgetError(f"{path}: {loaded.default_targets}: {exc}") from None
    ctx.meta[CONFIG_META] = loaded.describe(tuple(overridden), held)
    return out


def typed(param: str) -> bool:
    """Whether the user gave ``param`` on the command line (not its default): typed flags win over a file."""
    source = click.get_current_context().get_parameter_source(param)
    return source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def config_model(loaded: Any) -> str:
    """The model a config file names, checked against the catalog; an error names the file and key."""
    from lora_budget.catalog.models import resolve_model

    value = loaded.values["model"]
    try:
        resolve_model(value)
    except LoraBudgetError as exc:
        raise LoraBudgetError(f"{loaded.path}: {loaded.sources['model']}: {exc}") from None
    return value


def config_notes() -> list[str]:
    """Notes of the ``--config`` file the current command read (empty without one)."""
    ctx = click.get_current_context(silent=True)
    return list(ctx.meta.get(CONFIG_META, [])) if ctx else []


def spec_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The TrainSpec fields among parsed CLI options."""
    keys = (
        "seq_len",
        "grad_accum",
        "rank",
        "alpha",
        "targets",
        "quant",
        "quant_blocksize",
        "double_quant",
        "optimizer",
        "grad_ckpt",
        "attn",
        "dtype",
        "master_weights",
        "adapter_dtype",
        "gpus",
        "strategy",
        "offload",
        "framework",
        "lora_dropout",
        "loss",
        "kbit_prep",
        "autocast",
        "bitsandbytes",
        "objective",
        "reference",
        "completion_len",
        "generations",
        "vllm",
        "eval_batch_size",
        "ckpt_offload",
        "activation_offload",
    )
    return {k: kw[k] for k in keys if k in kw}


def parse_batch(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a positive integer or auto", param_hint="--batch-size") from None
    if value <= 0:
        raise click.BadParameter(f"must be positive, got {value}", param_hint="--batch-size")
    return value


MAX_REAL_STEP = 2**24
"""Largest micro-batch or sequence length a real or traced step is run at (16,777,216): the step
makes b x s token ids and activations of that many rows; past this it overflows int64 shapes or
allocates for minutes (plan, which only counts, takes any size)."""


def check_real_step(batch_size: int, seq_len: int) -> None:
    """A one-line usage error when a step to be traced or measured is beyond any real one."""
    for value, hint in ((batch_size, "--batch-size"), (seq_len, "--seq-len")):
        if value > MAX_REAL_STEP:
            shown = f"{value:,}" if value < 10**12 else f"a {len(str(value))}-digit number"
            raise click.BadParameter(f"{shown} is beyond any real step (at most {MAX_REAL_STEP:,})", param_hint=hint)


_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(text: str, hint: str) -> int:
    """A positive token count: ``100000000``, ``1e8``, ``100M``, ``1.5B`` (suffixes are decimal: k, M, B, T)."""
    t = text.strip().replace(",", "").replace("_", "").lower()
    suffix = t[-1:] if t[-1:] in _COUNT_SUFFIX and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(suffix)]) * _COUNT_SUFFIX[suffix]
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a token count (e.g. 100000000, 1e8, 100M, 2B)", param_hint=hint
        ) from None
    if not value >= 1 or value != value or value == float("inf"):
        raise click.BadParameter(f"must be at least 1 token, got {text!r}", param_hint=hint)
    return round(value)
