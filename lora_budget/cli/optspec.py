"""The spec options and plan's own options as data: the one source of truth for both ways they are parsed.

click builds its options from these records (``cli/options.py``: ``to_click``), so ``--help``, every
usage error and every other command read them there; ``cli/fast.py`` reads the same records to parse
the common ``lora-budget plan ...`` line without importing click (about 25 ms of its start here), and
hands anything it does not fully understand to click. No click import here.
"""

from __future__ import annotations

import os

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

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


_UNSET: Any = object()


class Opt:
    """One command-line option, as ``click.option(*decls, **settings)`` takes it.

    ``decls``: click's declarations, the flags (``--grad-ckpt/--no-grad-ckpt`` for a switch) and an
    optional keyword name; ``default``: the value when the option is not given (unset: click's own,
    None, or False for a flag); ``type``: ``int``, ``float``, ``path`` (a file, not a directory) or
    None (text); ``choices``: the values allowed; ``callback``: an eager ``(ctx, param, value)``
    function for a flag whose value the command does not receive (``--offline``).

    A plain slotted class, not a dataclass: these records are built on every ``plan`` start, and a
    frozen dataclass costs about 1 ms to create on Python 3.11 (its methods are compiled with exec).
    """

    __slots__ = ("decls", "default", "help", "show_default", "type", "choices", "is_flag", "callback")

    def __init__(
        self,
        *decls: str,
        default: Any = _UNSET,
        help: str,
        show_default: bool = False,
        type: str | None = None,
        choices: tuple[str, ...] | None = None,
        is_flag: bool = False,
        callback: Any = None,
    ) -> None:
        self.decls = decls
        self.default = default
        self.help = help
        self.show_default = show_default
        self.type = type
        self.choices = choices
        self.is_flag = is_flag
        self.callback = callback

    @property
    def dest(self) -> str:
        """The keyword the command receives: the name given, else the first long flag in snake case
        (click's rule; a test checks it against click's own)."""
        named = [d for d in self.decls if d.isidentifier()]
        if named:
            return named[0]
        first = next(d for d in self.decls if d.startswith("--"))
        return first.split("/")[0][2:].replace("-", "_").lower()

    @property
    def flags(self) -> dict[str, Any]:
        """Command-line spelling -> the value it sets, or ``None`` for an option that takes a value."""
        out: dict[str, Any] = {}
        for decl in self.decls:
            if decl.isidentifier():
                continue
            on, _, off = decl.partition("/")
            if off:  # a switch: --x sets True, --no-x False
                out[on], out[off] = True, False
            else:
                out[on] = True if self.is_flag else None
        return out


MODEL_HELP = (
    "Catalog name, alias, HF repo id, config.json path or model directory. Aliases: 7b = Llama-2-7B, "
    "13b = Llama-2-13B, 8b = Llama-3.1-8B, 70b = Llama-3.1-70B, 405b = Llama-3.1-405B, 1b = Llama-3.2-1B, "
    "3b = Llama-3.2-3B, 8x7b = Mixtral-8x7B (see `lora-budget models`)."
)

CONFIG_HELP = (
    "Read settings from a training config: axolotl or LLaMA-Factory YAML, TRL/transformers training "
    "arguments (JSON or YAML), PEFT adapter_config.json, a model config.json, or a DeepSpeed JSON. DeepSpeed "
    "and FSDP settings apply with --gpus N. Flags you give win."
)


def set_offline(ctx: Any, param: Any, value: bool) -> None:
    """``--offline``: huggingface_hub's own switch, which model resolution reads, for this run."""
    if value:
        os.environ["HF_HUB_OFFLINE"] = "1"


SPEC_OPTIONS: tuple[Opt, ...] = (
    Opt("--config", "config_file", type="path", default=None, help=CONFIG_HELP),
    Opt("--model", "-m", default="7b", show_default=True, help=MODEL_HELP),
    Opt(
        "--offline",
        is_flag=True,
        callback=set_offline,
        help="Never ask the Hugging Face Hub for a config.json (as HF_HUB_OFFLINE=1).",
    ),
    Opt(
        "--method",
        default="all",
        show_default=True,
        help=f"One of {', '.join(METHODS)}, a comma list, or all (full, lora, qlora side by side).",
    ),
    Opt("--seq-len", "-s", type="int", default=2048, show_default=True, help="Tokens per sequence."),
    Opt(
        "--batch-size",
        "-b",
        default="1",
        show_default=True,
        help="Micro-batch size, or auto for the largest that fits.",
    ),
    Opt("--grad-accum", type="int", default=1, show_default=True, help="Micro-batches per optimizer step."),
    Opt("--rank", "-r", type="int", default=16, show_default=True, help="LoRA rank."),
    Opt("--alpha", type="int", default=32, show_default=True, help="LoRA alpha (no effect on memory)."),
    Opt(
        "--targets",
        default="all-linear",
        show_default=True,
        help="LoRA targets: all-linear, attn, mlp, or module names (q_proj,v_proj).",
    ),
    Opt("--quant", choices=("nf4", "fp4"), default="nf4", show_default=True, help="QLoRA 4-bit type."),
    Opt("--quant-blocksize", type="int", default=64, show_default=True, help="QLoRA weights per absmax."),
    Opt("--double-quant/--no-double-quant", default=True, show_default=True, help="QLoRA nested quantization."),
    Opt(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help="adamw is torch's fused AdamW, adamw_foreach its foreach path (the Trainer's adamw_torch); 8-bit "
        "and paged ones are bitsandbytes'. Default: the framework's (hf-trainer: adamw_torch_fused from "
        "transformers 4.54 on torch 2.8, else adamw_torch).",
    ),
    Opt("--grad-ckpt/--no-grad-ckpt", default=False, show_default=True, help="Gradient checkpointing."),
    Opt("--attn", choices=ATTENTIONS, default="sdpa", show_default=True, help="Attention kernel."),
    Opt(
        "--dtype",
        choices=DTYPES,
        default="bf16",
        show_default=True,
        help="Weight and compute dtype (QLoRA: compute dtype).",
    ),
    Opt(
        "--master-weights/--no-master-weights",
        default=False,
        show_default=True,
        help="Full fine-tuning: keep fp32 master weights (mixed precision).",
    ),
    Opt(
        "--adapter-dtype",
        choices=DTYPES,
        default=None,
        help="LoRA weight dtype; default: the framework's (peft: fp32; litgpt: the model dtype).",
    ),
    Opt(
        "--framework",
        choices=FRAMEWORKS,
        default="hf-trainer",
        show_default=True,
        help="Training code: plain (the reference loop), hf-trainer (transformers Trainer, TRL, axolotl, "
        "LLaMA-Factory: bf16/fp16 autocast), litgpt (LitGPT's model and finetune loop: fused qkv, bf16 "
        "adapters, chunked bf16 loss; targets as its flags query,key,value,projection,mlp,head), "
        "torchtune (chunked loss).",
    ),
    Opt(
        "--lora-dropout",
        type="float",
        default=0.0,
        show_default=True,
        help="LoRA dropout p; above 0 each adapted layer keeps a dropped copy of its input and a mask.",
    ),
    Opt(
        "--loss",
        choices=LOSSES,
        default="auto",
        show_default=True,
        help="Loss kernel: full-ce (transformers), chunked-ce (torchtune), fused-ce (Liger / Cut "
        "Cross-Entropy); auto: the framework's.",
    ),
    Opt(
        "--autocast/--no-autocast",
        default=None,
        help="The forward under torch.autocast in the 16-bit dtype (Trainer bf16=True); default: on for hf-trainer.",
    ),
    Opt(
        "--bitsandbytes",
        default="0.50",
        show_default=True,
        help="bitsandbytes release; up to 0.43.1 every 4-bit matmul keeps its input for backward.",
    ),
    Opt(
        "--transformers",
        default="5.24",
        show_default=True,
        help="transformers release: before 4.49 the loss copies the shifted fp32 logits; before 5 QLoRA "
        "quantizes MoE experts (nn.Linear).",
    ),
    Opt(
        "--torch",
        default="2.13",
        show_default=True,
        help="torch release (with --transformers, sets the Trainer's default optimizer).",
    ),
    Opt(
        "--kbit-prep/--no-kbit-prep",
        default=None,
        help="QLoRA / 8-bit: peft's prepare_model_for_kbit_training ran (fp32 non-quantized weights and "
        "activations), as axolotl's QLoRA loader does.",
    ),
    Opt(
        "--objective",
        choices=OBJECTIVES,
        default="sft",
        show_default=True,
        help="What the step trains, as TRL runs it: sft; dpo/ipo/orpo/simpo (chosen + rejected pairs); "
        "grpo (completions, logits for the completion only, a generation phase); reward (score head).",
    ),
    Opt(
        "--reference",
        choices=REFERENCES,
        default="auto",
        show_default=True,
        help="dpo/ipo/grpo reference log-probs: adapter (adapters disabled), copy (a frozen model copy), "
        "precomputed, none; auto: TRL's default.",
    ),
    Opt(
        "--completion-len",
        type="int",
        default=0,
        help="grpo: completion tokens per sequence (max_completion_length; default 256); the prompt is the rest "
        "of --seq-len.",
    ),
    Opt(
        "--generations",
        type="int",
        default=8,
        show_default=True,
        help="grpo: completions per prompt (num_generations); --batch-size counts completions.",
    ),
    Opt(
        "--vllm/--no-vllm",
        default=False,
        help="grpo: completions from vLLM (its engine memory is not planned) instead of transformers' generate.",
    ),
    Opt(
        "--ckpt-offload/--no-ckpt-offload",
        default=False,
        help="With --grad-ckpt: checkpoints in host memory (Unsloth's offloaded checkpointing, axolotl's "
        "gradient_checkpointing: offload).",
    ),
    Opt(
        "--activation-offload/--no-activation-offload",
        default=False,
        help="Saved activations in host memory (TRL activation_offloading, torchtune "
        "enable_activation_offloading); planned from their rules and traced.",
    ),
    Opt(
        "--compile/--no-compile",
        default=False,
        help="Every decoder layer under torch.compile (torchtune compile: True): inductor's partitioner "
        "recomputes RMSNorm and SiLU intermediates in backward instead of keeping them.",
    ),
    Opt(
        "--eval-batch-size",
        type="int",
        default=0,
        show_default=True,
        help="Sequences per evaluation step during training (Trainer per_device_eval_batch_size); its logits "
        "spike can be the run's peak. 0: no evaluation planned.",
    ),
    Opt(
        "--gpus",
        type="int",
        default=1,
        show_default=True,
        help="Data-parallel GPUs, each running --batch-size sequences; memory figures are per GPU.",
    ),
    Opt(
        "--strategy",
        choices=STRATEGIES,
        default="ddp",
        show_default=True,
        help="With --gpus > 1: ddp replicates; zero1 shards optimizer state, zero2 also gradients, "
        "zero3 / fsdp (FSDP2) also parameters.",
    ),
    Opt(
        "--offload",
        choices=OFFLOADS,
        default="none",
        show_default=True,
        help="optimizer: state and master weights in CPU memory (zero1/2/3); params: parameters too (zero3, fsdp).",
    ),
)
"""Options every spec command takes (plan, trace, derive, check, report), in ``--help`` order."""

SPEC_KEYS = tuple(
    o.dest
    for o in SPEC_OPTIONS
    if o.callback is None and o.dest not in ("config_file", "model", "method", "batch_size")
)
"""The TrainSpec fields among the spec options (the rest choose the model and methods, or a file)."""


def spec_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The TrainSpec fields among parsed CLI options."""
    return {k: kw[k] for k in SPEC_KEYS if k in kw}


PLAN_OPTIONS: tuple[Opt, ...] = (
    Opt(
        "--gpu",
        "-g",
        default="24GB",
        show_default=True,
        help="Card name (rtx4090, a100-80gb, h100) or size (24GB = 24e9 bytes, 24GiB = 24 * 2^30).",
    ),
    Opt(
        "--overhead",
        default="0B",
        show_default=True,
        help="Extra bytes to reserve (CUDA context, fragmentation), e.g. 1GiB.",
    ),
    Opt("--tokens", help="Tokens to train on in total (all epochs), e.g. 100M or 1e8: adds wall time and cost."),
    Opt("--dataset-tokens", help="Tokens in one pass over the dataset; with --epochs instead of --tokens."),
    Opt("--epochs", type="float", default=None, help="Passes over --dataset-tokens (default 1)."),
    Opt("--price", type="float", default=None, help="USD per GPU-hour for the cost (the catalog has no prices)."),
    Opt(
        "--inter-node-gbps",
        type="float",
        default=None,
        help="Network bandwidth per GPU between nodes, Gb/s, when --gpus exceeds 8 (default 400: an assumed "
        "InfiniBand NDR adapter per GPU).",
    ),
    Opt("--json", "as_json", is_flag=True, help="One JSON object with a `methods` list."),
    Opt("--csv", "as_csv", is_flag=True, help="One CSV row per method."),
    Opt("--markdown", "as_markdown", is_flag=True, help="A Markdown table."),
)
"""``plan``'s own options, after the spec options in ``--help``."""
