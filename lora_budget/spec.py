"""The training spec: everything that changes how much memory a fine-tuning step needs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from lora_budget.catalog.shape import ModelShape
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any, Literal

    Method = Literal["full", "lora", "qlora", "lora8bit"]
    DType = Literal["fp32", "bf16", "fp16"]
    Optimizer = Literal[
        "adamw", "adamw_foreach", "adamw8bit", "paged_adamw", "paged_adamw8bit", "sgd", "sgd_momentum", "adafactor"
    ]
    Attention = Literal["eager", "sdpa", "flash"]
    Quant = Literal["nf4", "fp4"]
    Strategy = Literal["ddp", "zero1", "zero2", "zero3", "fsdp"]
    Offload = Literal["none", "optimizer", "params"]
    Framework = Literal["plain", "hf-trainer", "litgpt", "torchtune"]
    Loss = Literal["auto", "full-ce", "chunked-ce", "fused-ce", "litgpt-ce"]
    Objective = Literal["sft", "dpo", "ipo", "orpo", "simpo", "grpo", "reward"]
    Reference = Literal["auto", "none", "adapter", "copy", "precomputed"]


METHODS: tuple[Method, ...] = ("full", "lora", "qlora", "lora8bit")
DTYPES: tuple[DType, ...] = ("fp32", "bf16", "fp16")
OPTIMIZERS: tuple[Optimizer, ...] = (
    "adamw",
    "adamw_foreach",
    "adamw8bit",
    "paged_adamw",
    "paged_adamw8bit",
    "sgd",
    "sgd_momentum",
    "adafactor",
)
ATTENTIONS: tuple[Attention, ...] = ("eager", "sdpa", "flash")
STRATEGIES: tuple[Strategy, ...] = ("ddp", "zero1", "zero2", "zero3", "fsdp")
OFFLOADS: tuple[Offload, ...] = ("none", "optimizer", "params")
FRAMEWORKS: tuple[Framework, ...] = ("plain", "hf-trainer", "litgpt", "torchtune")
LOSSES: tuple[Loss, ...] = ("auto", "full-ce", "chunked-ce", "fused-ce", "litgpt-ce")
FRAMEWORK_LOSS: dict[str, str] = {
    "plain": "full-ce",
    "hf-trainer": "full-ce",
    "litgpt": "litgpt-ce",
    "torchtune": "chunked-ce",
}
"""The loss kernel each framework's own training step uses (``loss="auto"``): transformers'
``ForCausalLMLoss`` for the plain loop and the Trainer (TRL, axolotl and LLaMA-Factory run on it),
torchtune's ``CEWithChunkedOutputLoss`` (8 chunks) in its recipes, LitGPT's ``chunked_cross_entropy``
(128-token bf16 chunks, no fp32 upcast; ``litgpt/utils.py``)."""
OBJECTIVES: tuple[Objective, ...] = ("sft", "dpo", "ipo", "orpo", "simpo", "grpo", "reward")
REFERENCES: tuple[Reference, ...] = ("auto", "none", "adapter", "copy", "precomputed")
PAIRED: frozenset[str] = frozenset({"dpo", "ipo", "orpo", "simpo", "reward"})
"""Objectives whose micro-batch of b examples runs as 2b sequences: TRL's ``DataCollatorForPreference``
stacks the chosen and the rejected completions of each example (``dpo_trainer.py``, v1.9.0), and its
reward collator the chosen and rejected sequences (``reward_trainer.py``), into one forward."""
WITH_REFERENCE: frozenset[str] = frozenset({"dpo", "ipo", "grpo"})
"""Objectives whose loss compares against a frozen reference policy (TRL v1.9.0: DPO and IPO always
unless ``precompute_ref_log_probs``; GRPO only when ``beta`` > 0, its default being 0.0). ORPO and
SimPO are reference-free by construction."""
GRPO_COMPLETION = 256
"""TRL v1.9.0 ``GRPOConfig.max_completion_length`` default (``grpo_config.py``)."""


def grpo_completion(completion_len: int, seq_len: int) -> int:
    """GRPO's completion tokens: ``completion_len``, or TRL's default at most ``seq_len`` - 1."""
    return completion_len or min(GRPO_COMPLETION, seq_len - 1)


LIBRARIES = ("transformers", "torch", "bitsandbytes")
"""The spec fields that name a library release (plan prints them; JSON carries those off the defaults)."""
CPU_STEPPABLE = ("adamw", "adamw_foreach", "sgd", "sgd_momentum", "adafactor")
"""Optimizers an offloaded (CPU) step can stand for; bitsandbytes' GPU optimizers cannot."""
SHARDED_PARAMS: tuple[Strategy, ...] = ("zero3", "fsdp")
"""Strategies that shard the (frozen and trainable) parameters themselves."""
TARGET_PRESETS = ("all-linear", "attn", "mlp")
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}


FUSED_DEFAULT_FROM = ((4, 54, 0), (2, 8, 0))
"""transformers and torch releases from which the Trainer's default optimizer is ``adamw_torch_fused``
(``TrainingArguments``: ``if is_torch_greater_or_equal_than_2_8: default_optim = "adamw_torch_fused"``,
first in the 4.54 wheels; 4.33.3 to 4.53.3 keep ``default_optim = "adamw_torch"`` unconditionally)."""


def default_optimizer(framework: str, transformers: str, torch: str) -> str:
    """The optimizer a framework creates when the run names none: the Trainer's ``adamw_torch``
    (torch's AdamW, foreach on CUDA) unless both releases reach ``FUSED_DEFAULT_FROM``; adamw (fused)
    for the other frameworks."""
    versions = []
    for name, text in (("transformers", transformers), ("torch", torch)):
        if not isinstance(text, str) or not _version(text):
            raise LoraBudgetError(f"{name} version must look like 4.48 or 2.4.1, got {text!r}")
        versions.append(_version(text))
    if framework != "hf-trainer":
        return "adamw"
    fused = versions[0] >= FUSED_DEFAULT_FROM[0] and versions[1] >= FUSED_DEFAULT_FROM[1]
    return "adamw" if fused else "adamw_foreach"


@lru_cache(maxsize=256)
def _version(text: str) -> tuple[int, ...]:
    """``"0.43.1"`` -> (0, 43, 1); a missing patch is 0; () when it is not a release number.
    Cached: every spec a plan builds (a non-fitting method's candidates among them) reads its three
    library versions, the same few strings each time."""
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and len(p) <= 6 for p in parts):
        return ()
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    """A resolved model: its catalog name (or file path), where its numbers come from, and its shape."""

    name: str
    """Catalog name (``Llama-2-7B``) or the path of the config.json it was read from."""
    hf_id: str
    """Hugging Face repository id, or empty for a local config."""
    source: str
    """Where the config values come from."""
    shape: ModelShape
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The config.json values the shape was read from (the trace and profile engines build from them)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSpec:
    """One fine-tuning step, as the reference loop in README.md runs it."""

    model: ModelRef
    """The model to fine-tune."""
    method: Method = "lora"
    """full: every weight trains; lora: frozen 16-bit base + adapters; qlora: 4-bit base + adapters;
    lora8bit: int8 (LLM.int8) base + adapters."""
    dtype: DType = "bf16"
    """Storage dtype of the (non-quantized) weights, and the dtype activations are computed in.
    For qlora/lora8bit it is also the bitsandbytes compute dtype."""
    master_weights: bool = False
    """full only: keep an fp32 master copy of the 16-bit weights (classic mixed precision);
    optimizer state is then fp32 too."""
    adapter_dtype: DType | None = None
    """dtype of LoRA A/B. None: the framework's, resolved on construction: peft's default
    (``autocast_adapter_dtype=True``) keeps adapters in fp32; LitGPT's ``bf16-true`` precision
    keeps them in the model dtype."""
    rank: int = 16
    """LoRA rank r."""
    alpha: int = 32
    """LoRA alpha (does not change memory; recorded for the spec)."""
    targets: str = "all-linear"
    """LoRA target modules: ``all-linear``, ``attn``, ``mlp`` or a comma list of module names."""
    quant: Quant = "nf4"
    """qlora: 4-bit data type."""
    quant_blocksize: int = 64
    """qlora: weights per absmax block."""
    double_quant: bool = True
    """qlora: quantize the absmax values again (8-bit, blocks of 256)."""
    optimizer: Optimizer | None = None
    """Optimizer. adamw: torch's fused AdamW (``fused=True``); adamw_foreach: torch's AdamW on its
    multi-tensor (``foreach``) path, which it takes on CUDA when neither ``fused`` nor ``foreach`` is
    given (``_default_to_fused_or_foreach``), as the Trainer's ``adamw_torch`` and LitGPT create it.
    None: the framework's, resolved on construction (:func:`default_optimizer`): the Trainer's
    ``TrainingArguments.optim`` default for the spec's transformers and torch releases; adamw for the
    other frameworks."""
    batch_size: int = 1
    """Micro-batch size b (sequences per forward pass)."""
    seq_len: int = 2048
    """Tokens per sequence s."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; above 1, gradients stay alive through the next forward."""
    grad_ckpt: bool = False
    """Gradient (activation) checkpointing of every decoder layer, transformers' non-reentrant default."""
    ckpt_offload: bool = False
    """With ``grad_ckpt``: each layer's checkpoint (its input hidden state) lives in host memory, as
    Unsloth's offloaded checkpointing and axolotl's ``gradient_checkpointing: offload`` keep it
    (``runtime/offload.py``); the device holds only the layer being recomputed."""
    activation_offload: bool = False
    """Every saved activation in host memory during the step, as TRL's ``activation_offloading=True``
    (and torchtune's ``enable_activation_offloading``, whose ``OffloadActivations`` it adapts) moves
    it: saved tensors of 1 KiB or more go to the CPU in the forward and come back one autograd node
    at a time in backward; the output head's are kept (``runtime/offload.py``)."""
    compile: bool = False
    """Every decoder layer under ``torch.compile`` (inductor), as torchtune's ``compile: True`` compiles
    them: AOTAutograd's min-cut partitioner decides what each layer keeps for backward and recomputes
    the cheap pointwise intermediates (RMSNorm's fp32 copy, SiLU's output) in backward instead
    (``core/compiled.py``, traced by ``runtime/compiled.py``)."""
    attn: Attention = "sdpa"
    """Attention implementation: eager keeps the s x s scores, sdpa and flash do not."""
    gpus: int = 1
    """Data-parallel world size N; every GPU runs its own micro-batch of ``batch_size``. Bytes are per GPU."""
    strategy: Strategy = "ddp"
    """How N > 1 GPUs share the state: ddp replicates everything (torch DDP); zero1 shards optimizer
    state and master weights, zero2 also gradients (DeepSpeed ZeRO); zero3 and fsdp (FSDP2
    ``fully_shard``) also the parameters. With one GPU only ddp (plain single-GPU training) applies."""
    offload: Offload = "none"
    """optimizer: optimizer state, master weights and gradient partitions live in CPU memory
    (DeepSpeed ZeRO-Offload, zero1/2/3); params: parameters too (zero3 ``offload_param``, FSDP2
    ``CPUOffloadPolicy``, which moves sharded parameters, gradients and optimizer state)."""
    framework: Framework = "hf-trainer"
    """The training code that runs the step; the default is what most fine-tuning runs use.
    plain: the reference loop in README.md (no autocast, transformers' loss). hf-trainer:
    transformers' ``Trainer`` (and TRL, axolotl and LLaMA-Factory, which run on it): the forward
    under autocast with 16-bit weights (``bf16=True``/``fp16=True``). torchtune: its recipes'
    chunked cross-entropy (``loss="auto"``). litgpt: LitGPT's own model code and ``finetune lora``
    loop (``core/litgpt.py``: fused qkv, its LoRA flags, bf16-true, its chunked loss, 4-bit lm_head
    under QLoRA)."""
    lora_dropout: float = 0.0
    """LoRA dropout p (peft's ``lora_dropout``; its default is 0). Above 0 every adapted linear runs
    its adapter on ``dropout(x)``: a new input-sized tensor and a 1-byte mask per adapted layer."""
    loss: Loss = "auto"
    """Loss kernel. full-ce: the whole b x s x V logits, upcast to fp32 (transformers'
    ``ForCausalLMLoss``); chunked-ce: logits made and upcast per chunk (torchtune, 8 chunks);
    fused-ce: a fused linear cross-entropy that never materializes the logits (Liger, Cut
    Cross-Entropy); litgpt-ce: LitGPT's ``chunked_cross_entropy`` over its lm_head's 128-token bf16
    chunks, no upcast (framework litgpt only); auto: the framework's own."""
    loss_chunks: int = 8
    """chunked-ce: number of chunks along the sequence (torchtune's ``num_output_chunks``)."""
    kbit_prep: bool | None = None
    """QLoRA / 8-bit LoRA: the model went through peft's ``prepare_model_for_kbit_training``,
    which casts every non-quantized parameter (embeddings, norms, lm_head, biases) to fp32, so the
    residual stream, the norms' outputs and the logits are fp32 too. axolotl's QLoRA loader calls
    it (``loaders/model.py``); TRL's SFTTrainer and LLaMA-Factory do not, so no framework turns it
    on by default (None: off); ``--config`` sets it from the file's tool."""
    autocast: bool | None = None
    """Mixed precision as the Trainer runs it (``bf16=True`` / ``fp16=True``: accelerate wraps the
    forward in ``torch.autocast``): linears and attention run in the 16-bit dtype, so peft's fp32
    adapters keep a 16-bit copy of their input and the fp32 logits of a kbit-prepared head come out
    16-bit. None: the framework's default (on for hf-trainer with 16-bit weights). Planned for
    16-bit weights only (fp32 weights under autocast are not modelled yet)."""
    bitsandbytes: str = "0.50"
    """bitsandbytes release (major.minor[.patch]) whose ``MatMul4Bit`` runs. Up to 0.43.1 it kept its
    16-bit input for backward whenever that input needed a gradient (``ctx.tensors = (A, B)``,
    added in 13c0a4dc, 2023); 0.43.2 (commit 9e753741, bitsandbytes#1270, July 2024) keeps only the
    packed weight. The default is the release the trace runs."""
    transformers: str = "5.24"
    """transformers release whose model and loss code runs (frameworks plain and hf-trainer; Llama-family
    modelling files read). Up to 4.45 the model upcasts the logits itself (``self.lm_head(...).float()``,
    ``modeling_llama.py`` 4.44.2 line 1209, 4.45.2 line 1214) and its loss copies the shifted fp32 logits
    (``logits[..., :-1, :].contiguous()``); 4.46 to 4.48 keep the 16-bit logits in the output and the
    loss upcasts and copies them (``loss/loss_utils.py`` 4.48.1 lines 36-38); from 4.49 the loss shifts
    the labels instead (transformers#35646). Before 5.0 a Mixtral-style MoE builds every expert from
    ``nn.Linear`` modules (``MixtralBlockSparseTop2MLP`` w1/w2/w3), which QLoRA and 8-bit LoRA quantize;
    from 5.0 experts are 3-D parameters that bitsandbytes leaves 16-bit. The default is the release the
    trace runs."""
    torch: str = "2.13"
    """torch release. With transformers it sets the Trainer's default optimizer (``optimizer=None``):
    ``adamw_torch_fused`` from transformers 4.54 on torch >= 2.8 (``training_args.py``, 4.54.1 line
    1290), ``adamw_torch`` otherwise. The default is the release the trace runs."""
    previous_step: bool = True
    """framework litgpt: the step before the peak ran at the same length, so what LitGPT's loop keeps
    of it (its fp32 logits, and on bitsandbytes <= 0.43.1 every 4-bit matmul input) is alive through
    the peak step's forward, and its validation runs beside them. False where the longest batch runs
    once, first: lit-gpt's 2023 ``finetune/lora.py`` forces the longest sample into iteration 0
    (``get_batch(..., longest_seq_ix if iter_num == 0 else None)``) and validates before training,
    so nothing of a previous step is alive at the whole-run peak."""
    objective: Objective = "sft"
    """What the step optimizes. sft: next-token cross-entropy on every position. dpo / ipo (a frozen
    reference), orpo / simpo (none): preference pairs, as TRL's ``DPOTrainer`` runs them: the chosen
    and the rejected sequence of each example go through one forward (2b sequences) and per-token
    log-probabilities come from ``selective_log_softmax`` instead of a cross-entropy. grpo: TRL's
    ``GRPOTrainer`` step: b completions of ``completion_len`` tokens after a prompt, logits only
    for the completion (``logits_to_keep``), and a generation phase before it. reward: a sequence
    classifier with one output (``AutoModelForSequenceClassification(num_labels=1)``, TRL's
    ``RewardTrainer``) on chosen + rejected pairs: a scalar head replaces lm_head and its logits."""
    reference: Reference = "auto"
    """Where a dpo / ipo / grpo loss gets its reference log-probabilities. adapter: the policy with
    its adapters disabled (TRL's default with PEFT: no extra weights); copy: a second, frozen copy of
    the model in the weights' dtype (TRL's default for full fine-tuning); precomputed: computed once
    before training (``precompute_ref_log_probs``); none: no reference (grpo with ``beta`` = 0).
    auto: TRL's default for the objective and method (grpo: none, as ``beta`` defaults to 0.0)."""
    completion_len: int = 0
    """grpo: completion tokens per sequence (``max_completion_length``); the prompt is the rest of
    ``seq_len``. 0: TRL's default, 256 (at most ``seq_len`` - 1)."""
    generations: int = 8
    """grpo: completions sampled per prompt (``num_generations``, TRL's default 8). The micro-batch
    counts completions, so this sets how many prompts it holds, not its size."""
    vllm: bool = False
    """grpo: completions come from vLLM (``use_vllm``), whose engine memory (another GPU in server
    mode, a ``vllm_gpu_memory_utilization`` share in colocate mode) is not planned. Off: transformers'
    ``generate`` on the training GPU, planned as its own phase."""
    eval_batch_size: int = 0
    """Sequences per evaluation step (the Trainer's ``per_device_eval_batch_size``, default 8, when an
    evaluation runs during training); 0: no evaluation planned. The Trainer evaluates under ``no_grad``
    with labels after an optimizer step (gradients set to None, optimizer state alive) and, without a
    ``compute_metrics``, keeps no logits (``Trainer.evaluate`` passes ``prediction_loss_only=True``):
    its peak is the loss's logits spike at ``eval_batch_size`` x ``seq_len`` tokens."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Non-fatal remarks found while validating (e.g. sequence longer than the model's positions)."""

    def __post_init__(self) -> None:
        shape = self.model.shape
        if self.method not in METHODS:
            raise LoraBudgetError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.dtype not in DTYPES:
            raise LoraBudgetError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.adapter_dtype is None:
            object.__setattr__(self, "adapter_dtype", self.dtype if self.framework == "litgpt" else "fp32")
        if self.optimizer is None:
            object.__setattr__(self, "optimizer", default_optimizer(self.framework, self.transformers, self.torch))
        if self.adapter_dtype not in DTYPES:
            raise LoraBudgetError(f"unknown adapter dtype {self.adapter_dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.optimizer not in OPTIMIZERS:
            raise LoraBudgetError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.attn not in ATTENTIONS:
            raise LoraBudgetError(f"unknown attention {self.attn!r}; choose one of {', '.join(ATTENTIONS)}")
        self._check_framework()
        self._check_objective()
        if self.quant not in ("nf4", "fp4"):
            raise LoraBudgetError(f"unknown 4-bit type {self.quant!r}; choose nf4 or fp4")
        for label, value in (
            ("batch size", self.batch_size),
            ("sequence length", self.seq_len),
            ("gradient accumulation", self.grad_accum),
            ("LoRA rank", self.rank),
            ("quantization blocksize", self.quant_blocksize),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LoraBudgetError(f"{label} must be a positive integer, got {value!r}")
        if self.quant_blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise LoraBudgetError(
                f"quantization blocksize {self.quant_blocksize} is not one bitsandbytes supports "
                "(32, 64, 128, ..., 4096)"
            )
        if self.master_weights and (self.method != "full" or self.dtype == "fp32"):
            raise LoraBudgetError("master weights apply to full fine-tuning with 16-bit weights only")
        if self.method in ("qlora", "lora8bit") and self.dtype == "fp32":
            raise LoraBudgetError(f"{self.method} needs a 16-bit compute dtype (bf16 or fp16), not fp32")
        self._check_parallel()
        if self.framework == "litgpt":
            from lora_budget.core.litgpt import check

            check(self)
        elif self.method != "full":
            from lora_budget.core.lora import resolve_targets

            resolve_targets(shape, self.targets, self.rank)
        if shape.model_type == "gemma2" and self.attn == "sdpa":
            # transformers 5 refuses sdpa for Gemma 2 (attention soft-capping); it runs eager
            object.__setattr__(self, "attn", "eager")
            object.__setattr__(
                self, "warnings", self.warnings + ("Gemma 2 has no sdpa attention in transformers; planned with eager",)
            )
        if shape.derived and self.autocast is None and self.framework == "hf-trainer" and self.dtype != "fp32":
            # trace-derived coefficients come from the plain loop: CPU autocast on fake tensors is not
            # CUDA's for LayerNorm models (derive/_check_autocast), and every shipped record is plain
            object.__setattr__(self, "autocast", False)
            object.__setattr__(
                self,
                "warnings",
                self.warnings
                + (
                    "a trace-derived model is planned without the Trainer's autocast (its coefficients are the "
                    "plain loop's): LoRA keeps fp32 copies of adapter inputs there, 16-bit ones under autocast, "
                    "so LoRA activations are over-planned; --autocast derives autocast coefficients (RMSNorm "
                    "models only)",
                ),
            )
        if shape.notes:
            object.__setattr__(self, "warnings", self.warnings + shape.notes)
        if self.seq_len > shape.max_positions:
            object.__setattr__(
                self,
                "warnings",
                self.warnings
                + (
                    f"sequence length {self.seq_len} exceeds the model's max_position_embeddings "
                    f"({shape.max_positions}); memory is still estimated",
                ),
            )

    def _check_framework(self) -> None:
        """Framework, loss kernel, LoRA dropout and kbit preparation; resolves the framework defaults."""
        if self.framework not in FRAMEWORKS:
            raise LoraBudgetError(f"unknown framework {self.framework!r}; choose one of {', '.join(FRAMEWORKS)}")
        if self.loss not in LOSSES:
            raise LoraBudgetError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        p = self.lora_dropout
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise LoraBudgetError(f"LoRA dropout must be a probability in [0, 1), got {p!r}")
        object.__setattr__(self, "lora_dropout", float(p))
        n = self.loss_chunks
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096:
            raise LoraBudgetError(f"loss chunks must be an integer from 1 to 4096, got {n!r}")
        if self.kbit_prep is not None and not isinstance(self.kbit_prep, bool):
            raise LoraBudgetError(f"kbit_prep must be true, false or None, got {self.kbit_prep!r}")
        if not isinstance(self.bitsandbytes, str) or not _version(self.bitsandbytes):
            raise LoraBudgetError(f"bitsandbytes version must look like 0.42 or 0.43.1, got {self.bitsandbytes!r}")
        default_optimizer(self.framework, self.transformers, self.torch)  # refuses a malformed release
        if (
            self.model.shape.is_moe
            and self.method != "full"
            and self.targets in ("all-linear", "mlp")
            and self.transformers_version < (5, 0, 0)
        ):
            raise LoraBudgetError(
                f"--targets {self.targets} on transformers {self.transformers} adapts every MoE expert's w1/w2/w3 "
                "nn.Linear, which is not modelled; name the modules (e.g. q_proj,k_proj,v_proj,o_proj)"
            )
        if not isinstance(self.previous_step, bool):
            raise LoraBudgetError(f"previous_step must be true or false, got {self.previous_step!r}")
        if not self.previous_step and self.framework != "litgpt":
            raise LoraBudgetError("previous_step=False describes LitGPT's loop; it needs --framework litgpt")
        if self.autocast is not None and not isinstance(self.autocast, bool):
            raise LoraBudgetError(f"autocast must be true, false or None, got {self.autocast!r}")
        if self.framework == "litgpt" and (self.loss_kernel != "litgpt-ce" or self.autocast or self.kbit_prep):
            raise LoraBudgetError(
                "--framework litgpt runs its own chunked loss under bf16-true precision (no autocast, no kbit "
                "preparation); drop --loss, --autocast and --kbit-prep"
            )
        if self.framework != "litgpt" and self.loss == "litgpt-ce":
            raise LoraBudgetError("--loss litgpt-ce is LitGPT's chunked lm_head; it needs --framework litgpt")
        if self.autocast and self.dtype == "fp32":
            raise LoraBudgetError(
                "autocast over fp32 weights (a model loaded without torch_dtype) is not modelled yet; "
                "plan with --dtype bf16 or --no-autocast"
            )

    def _check_objective(self) -> None:
        """Objective, reference and completion length: one message naming the option for each bad value."""
        if self.objective not in OBJECTIVES:
            raise LoraBudgetError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.reference not in REFERENCES:
            raise LoraBudgetError(f"unknown reference {self.reference!r}; choose one of {', '.join(REFERENCES)}")
        for label, value, low in (("completion length", self.completion_len, 0), ("generations", self.generations, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise LoraBudgetError(f"{label} must be an integer >= {low}, got {value!r}")
        if self.reference not in ("auto", "none") and self.objective not in WITH_REFERENCE:
            raise LoraBudgetError(
                f"--reference {self.reference} applies to dpo, ipo and grpo; {self.objective} has no reference model"
            )
        if self.reference == "adapter" and self.method == "full":
            raise LoraBudgetError("--reference adapter disables LoRA adapters; full fine-tuning has none (use copy)")
        if self.reference == "precomputed" and self.objective == "grpo":
            raise LoraBudgetError("GRPO scores fresh completions each step; its reference cannot be precomputed")
        if not isinstance(self.compile, bool):
            raise LoraBudgetError(f"compile must be true or false, got {self.compile!r}")
        if self.ckpt_offload and not self.grad_ckpt:
            raise LoraBudgetError("--ckpt-offload moves gradient checkpoints to host memory; it needs --grad-ckpt")
        if self.activation_offload:
            self._check_activation_offload()
        e = self.eval_batch_size
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= 1 << 20:
            raise LoraBudgetError(f"eval batch size must be an integer from 0 to 1048576, got {e!r}")
        if e and self.objective != "sft":
            raise LoraBudgetError(f"evaluation is planned for sft steps; --eval-batch-size with {self.objective}")
        if self.objective != "grpo" and (self.completion_len or self.vllm):
            raise LoraBudgetError("--completion-len and --vllm apply to grpo only")
        if self.objective == "grpo" and self.completion_len >= self.seq_len:
            raise LoraBudgetError(
                f"completion length {self.completion_len} leaves no prompt in sequence length {self.seq_len}"
            )
        if self.objective != "sft" and self.loss_kernel != "full-ce":
            raise LoraBudgetError(
                f"--loss {self.loss_kernel} is a cross-entropy kernel; {self.objective} computes its own loss "
                "(plan it with --loss auto)"
            )

    def _check_activation_offload(self) -> None:
        """Activation offloading as TRL and torchtune run it (``core/offload.py``)."""
        if self.framework == "torchtune" and not self.grad_ckpt:
            raise LoraBudgetError(
                "torchtune's recipes refuse activation offloading without activation checkpointing "
                "(enable_activation_checkpointing: True); add --grad-ckpt"
            )
        if self.framework == "litgpt":
            raise LoraBudgetError("LitGPT has no activation offloading; drop --activation-offload or change framework")
        if self.ckpt_offload:
            raise LoraBudgetError(
                "--activation-offload and --ckpt-offload both move the checkpoints to host memory; choose one"
            )

    @property
    def objective_note(self) -> str:
        """One line on what the objective adds to the step, for the plan's output ('' for sft)."""
        if self.objective == "sft":
            return ""
        ref = {
            "adapter": "reference: the policy with adapters disabled (no extra weights)",
            "copy": "reference: a frozen copy of the model (in weights)",
            "precomputed": "reference: log-probs precomputed before training",
            "none": "no reference model",
        }[self.reference_kind]
        if self.objective == "reward":
            return "reward: a scalar score head instead of lm_head, 2 sequences per example (chosen + rejected)"
        if self.objective == "grpo":
            gen = "vLLM, not planned" if self.vllm else "transformers generate, planned"
            return (
                f"grpo: b = {self.batch_size} completions ({self.generations} per prompt) of "
                f"{self.completion_tokens} tokens, logits for the completion only; {ref}; generation: {gen}"
            )
        return f"{self.objective}: 2 sequences per example (chosen + rejected); {ref}"

    @property
    def sequences_per_example(self) -> int:
        """Sequences one example puts through the forward: 2 for preference pairs, else 1."""
        return 2 if self.objective in PAIRED else 1

    @property
    def reference_kind(self) -> str:
        """The reference that runs: ``reference``, or for auto TRL's default (v1.9.0): dpo / ipo use
        the adapter-disabled policy under PEFT and a frozen copy for full fine-tuning; grpo none."""
        if self.objective not in WITH_REFERENCE:
            return "none"
        if self.reference != "auto":
            return self.reference
        if self.objective == "grpo":
            return "none"
        return "copy" if self.method == "full" else "adapter"

    @property
    def completion_tokens(self) -> int:
        """grpo: completion tokens per sequence (0 for other objectives)."""
        if self.objective != "grpo":
            return 0
        return grpo_completion(self.completion_len, self.seq_len)

    @property
    def loss_kernel(self) -> str:
        """The loss kernel that runs: ``loss``, or the framework's own for ``auto``."""
        return FRAMEWORK_LOSS[self.framework] if self.loss == "auto" else self.loss

    @property
    def transformers_version(self) -> tuple[int, ...]:
        """(major, minor, patch) of ``transformers``."""
        return _version(self.transformers)

    @property
    def experts_quantized(self) -> bool:
        """QLoRA / 8-bit LoRA on transformers < 5: every MoE expert is an ``nn.Linear`` bitsandbytes replaces."""
        return self.method in ("qlora", "lora8bit") and self.transformers_version < (5, 0, 0)

    @property
    def bnb_keeps_input(self) -> bool:
        """QLoRA with a bitsandbytes release whose 4-bit matmul keeps its input (<= 0.43.1)."""
        return self.method == "qlora" and _version(self.bitsandbytes) <= (0, 43, 1)

    @property
    def autocast_on(self) -> bool:
        """Whether the forward runs under ``torch.autocast``: ``autocast`` or, when None, the
        framework's default (hf-trainer with 16-bit weights)."""
        if self.autocast is None:
            return self.framework == "hf-trainer" and self.dtype != "fp32"
        return self.autocast

    @property
    def kbit_prepared(self) -> bool:
        """Whether ``prepare_model_for_kbit_training`` ran: quantized methods only (it prepares a
        bitsandbytes-loaded model); ``kbit_prep`` or, when None, the framework's default."""
        if self.method not in ("qlora", "lora8bit"):
            return False
        return bool(self.kbit_prep)

    def _check_parallel(self) -> None:
        """World size, strategy and offload: one message naming the option for each bad combination."""
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 1:
            raise LoraBudgetError(f"--gpus must be a positive integer, got {self.gpus!r}")
        if self.strategy not in STRATEGIES:
            raise LoraBudgetError(f"unknown --strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.offload not in OFFLOADS:
            raise LoraBudgetError(f"unknown --offload {self.offload!r}; choose one of {', '.join(OFFLOADS)}")
        if self.gpus == 1 and self.strategy != "ddp":
            raise LoraBudgetError(f"--strategy {self.strategy} shards state across GPUs and needs --gpus 2 or more")
        if self.offload == "optimizer" and self.strategy not in ("zero1", "zero2", "zero3"):
            raise LoraBudgetError(
                f"--offload optimizer needs --strategy zero1, zero2 or zero3 (DeepSpeed ZeRO-Offload), not "
                f"{self.strategy}" + ("; FSDP2 offloads with --offload params" if self.strategy == "fsdp" else "")
            )
        if self.offload == "params" and self.strategy not in SHARDED_PARAMS:
            raise LoraBudgetError(f"--offload params needs --strategy zero3 or fsdp, not {self.strategy}")
        if self.offload != "none" and self.optimizer not in CPU_STEPPABLE:
            raise LoraBudgetError(
                f"--offload {self.offload} runs the optimizer step on the CPU; --optimizer {self.optimizer} is a "
                "bitsandbytes GPU optimizer (use adamw)"
            )
        if self.method == "qlora" and self.strategy == "zero3":
            object.__setattr__(
                self,
                "warnings",
                self.warnings
                + (
                    "DeepSpeed ZeRO-3 partitions floating-point parameters only: load the 4-bit model with "
                    "bnb_4bit_quant_storage=torch.bfloat16 (the same bytes; FSDP2 also shards uint8 storage)",
                ),
            )
        if self.method == "lora8bit" and self.strategy in SHARDED_PARAMS:
            raise LoraBudgetError(
                f"--strategy {self.strategy} cannot shard lora8bit weights: bitsandbytes' Linear8bitLt keeps its "
                "int8 scales (SCB) on the weight tensor, which sharding splits and regathers without them; "
                "use --method qlora or --strategy ddp, zero1 or zero2"
            )

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def activation_bytes(self) -> int:
        """Bytes per element of the residual stream and of what the layers save.

        The compute dtype, except after ``prepare_model_for_kbit_training``: its fp32 embedding
        output starts an fp32 residual stream, fp32 norm weights keep the norms' outputs fp32, and
        bitsandbytes' ``Linear4bit`` / ``Linear8bitLt`` return their output in their input's dtype
        (``.to(inp_dtype)``, bitsandbytes 0.50 ``nn/modules.py``): every activation is fp32, only
        the 4-bit / 8-bit matmuls run in the compute dtype.
        """
        return 4 if self.kbit_prepared else DTYPE_BYTES[self.dtype]

    @property
    def frozen_dense_bytes(self) -> int:
        """Bytes per element of the non-quantized frozen weights (embeddings, norms, lm_head):
        fp32 after ``prepare_model_for_kbit_training``, else the storage dtype."""
        return 4 if self.kbit_prepared else DTYPE_BYTES[self.dtype]

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len
