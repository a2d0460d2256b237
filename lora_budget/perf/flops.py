"""Floating-point work of one training micro-batch, per method, derived from the parameter inventory.

Symbols: T = b * s tokens in the micro-batch (b sequences of s tokens); N a GEMM weight's element
count; L decoder layers; a query heads of width d; r the LoRA rank.

**Weight GEMMs.** A linear layer y = x W^T with W of N = in * out elements does T * N multiply-adds
in the forward pass, 2 * N * T FLOPs. The backward pass has two GEMMs of the same size: the input
gradient dx = dy W (2 * N * T) and the weight gradient dW = dy^T x (2 * N * T). So

- a trained weight (full fine-tuning) costs 6 * N * T per micro-batch: the "6N FLOPs per token"
  of Kaplan et al., *Scaling Laws for Neural Language Models* (2020), section 2.1, and of PaLM
  (Chowdhery et al. 2022), appendix B;
- a frozen weight that gradients must still pass through (the base model under LoRA/QLoRA) costs
  4 * N * T: forward + input gradient, no weight gradient;
- LoRA's A (r x in) and B (out x r) are trained weights: 6 * N_adapter * T, with
  N_adapter = r * (in + out) per adapted linear (Hu et al., *LoRA*, 2021, section 4.1).

GEMM weights counted: every decoder-layer linear (and bias-free router), MoE expert tensors scaled
by top-k / experts (each token visits k experts), and the output projection lm_head (V x h, also
when tied to the embedding). The embedding lookup is a gather, not a GEMM: 0 FLOPs.

**Attention core.** Per layer, QK^T multiplies (s x d) by (d x s) for each of a heads and b
sequences: 2 * b * a * d * s^2 FLOPs; the AV product has the same size. Forward, without a mask:
4 * b * s^2 * a * d per layer. This is the attention term of the Megatron-LM estimate (Narayanan et
al., *Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM*, 2021,
section 5.1: 72 * B * s * l * h^2 * (1 + s / (6h) + ...) has 72 * B * s * l * h^2 * s / (6h)
= 12 * B * s^2 * l * h for forward + backward, i.e. 3 x 4 * B * s^2 * h per layer) and of PaLM
appendix B (12 * L * H * Q * T FLOPs per token for forward + backward = 3 x 4 * L * H * Q * T).
Neither halves it for causality. We count executed work instead:

- ``eager`` computes the full s x s score matrix and then masks it: factor 1;
- ``sdpa`` / ``flash`` (causal FlashAttention kernels) skip the masked half: factor 1/2, the same
  convention as the FlashAttention benchmark's ``flops()`` helper (Dao, *FlashAttention-2*, 2023).

The backward pass of the two matmuls is 2x their forward (gradients with respect to both operands;
attention inputs are activations, so every method pays it). FlashAttention's backward also
recomputes QK^T inside the kernel: 2.5x forward, as that helper counts.

**Gradient checkpointing** re-runs the forward pass of every decoder layer during backward: one
more 2 * N * T per decoder linear (base and adapter) and one more attention forward. lm_head is
outside the checkpointed layers and is not recomputed.

**Not counted** (memory-bound, folded into the utilization factor): norms, activations functions,
rotary embeddings, softmax and cross-entropy, residual adds, dropout. LoRA on the first layer: the
gradient into the embedding output is not needed, yet we count the first layer's frozen input
gradients (an over-count of at most 1/L of the frozen backward). Known error of the whole count
against a profiler's FLOP counter: about 1-2 % for 7B-class models at s = 2048 (the elementwise
ops above).

**Dequantization (QLoRA, 8-bit LoRA).** Not FLOPs: bitsandbytes turns each quantized weight back
into a 16-bit matrix before the GEMM, once in the forward pass and again in the backward pass for
the input gradient (``MatMul4Bit.backward``), and once more in checkpointing's recompute. Each pass
reads the packed weight plus its quantization state and writes 2 bytes per weight: memory traffic,
timed against the GPU's memory bandwidth in :mod:`lora_budget.perf.time`. 8-bit LoRA is modelled
the same way (1 byte read, 2 written per weight and pass); that is an approximation: LLM.int8's
forward multiplies in int8 after quantizing the input, and its cost sits in the lower utilization
default of :mod:`lora_budget.perf.utilization` rather than here.
"""

from __future__ import annotations

from lora_budget.core.lora import adapter_tensors, resolve_targets
from lora_budget.core.params import inventory
from lora_budget.records import dataclass
from lora_budget.spec import DTYPE_BYTES, TrainSpec

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from lora_budget.catalog.shape import ModelShape


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFlops:
    """FLOPs and memory traffic of one micro-batch (b x s tokens): forward + backward, no optimizer."""

    tokens: int
    """T = b * s."""
    dense_flops: int
    """Weight GEMMs of the base model (decoder linears, experts, router, lm_head): 6NT trained, 4NT frozen."""
    adapter_flops: int
    """LoRA A/B GEMMs: 6 * N_adapter * T."""
    attention_flops: int
    """QK^T and AV, forward + backward (incl. FlashAttention's in-kernel recompute)."""
    recompute_flops: int
    """Gradient checkpointing's second forward of the decoder layers (0 without it)."""
    flash_recompute_flops: int
    """The part of ``attention_flops`` that FlashAttention recomputes in its backward kernel."""
    dequant_bytes: int
    """Bytes bitsandbytes reads and writes to dequantize weights (QLoRA, 8-bit LoRA), all passes."""
    forward_flops: int = 0
    """The forward pass alone: 2 x (weights + adapters) x T + the attention forward; the rest of
    ``total_flops`` is backward (with checkpointing's recompute), the window that hides gradient traffic."""

    @property
    def total_flops(self) -> int:
        """Executed FLOPs: what the GPU runs."""
        return self.dense_flops + self.adapter_flops + self.attention_flops + self.recompute_flops

    @property
    def model_flops(self) -> int:
        """The work the step needs, without recomputation (the numerator of MFU, PaLM appendix B)."""
        return self.total_flops - self.recompute_flops - self.flash_recompute_flops


def _weight_numels(spec: TrainSpec) -> tuple[int, int]:
    """(decoder GEMM weight elements touched per token, lm_head elements)."""
    shape = spec.model.shape
    decoder = 0
    for t in inventory(shape):
        if t.role in ("linear", "router"):
            decoder += t.total_numel
        elif t.role == "experts":
            # each token visits top-k of the E experts: k / E of the expert weights per token
            top_k, experts = routing(shape)
            decoder += t.total_numel * top_k // experts
    return decoder, shape.vocab * shape.hidden


EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_top_k")


def routing(shape: ModelShape) -> tuple[int, int]:
    """(top-k, experts) of an MoE layer: the analytical shape's, or for a trace-derived model (whose
    shape carries no expert counts) the transformers config attributes it was derived from. Without
    them every expert counts (k = E: an upper bound on the work)."""
    if shape.experts:
        return shape.experts_per_token, shape.experts
    import json

    attrs = json.loads(shape.arch_config or "{}")
    experts = next((int(attrs[k]) for k in EXPERT_KEYS if isinstance(attrs.get(k), int) and attrs[k] > 0), 0)
    top_k = next((int(attrs[k]) for k in TOP_K_KEYS if isinstance(attrs.get(k), int) and attrs[k] > 0), 0)
    if not experts or not top_k or top_k > experts:
        return 1, 1
    return top_k, experts


def quantized_numel(spec: TrainSpec) -> int:
    """Weights bitsandbytes stores quantized: the decoder-layer linears (see core/params.py roles)."""
    if spec.method not in ("qlora", "lora8bit"):
        return 0
    return sum(t.total_numel for t in inventory(spec.model.shape) if t.role == "linear")


def dequant_bytes_per_weight(spec: TrainSpec) -> float:
    """Bytes moved to dequantize one weight once: read the stored code + state, write the 16-bit value.

    QLoRA: 4 bits of code + ``quant_state`` bits (absmax: 32 / blocksize bits, or with double
    quantization 8 / blocksize + 32 / (blocksize * 256)), written as ``compute_bytes``.
    8-bit LoRA: 1 byte of code (+ a per-row fp32 scale, negligible) written as ``compute_bytes``.
    """
    out_bytes = DTYPE_BYTES[spec.dtype]
    if spec.method == "qlora":
        b = spec.quant_blocksize
        state_bits = (8 / b + 32 / (b * 256)) if spec.double_quant else 32 / b
        return (4 + state_bits) / 8 + out_bytes
    if spec.method == "lora8bit":
        return 1 + out_bytes
    return 0.0


def step_flops(spec: TrainSpec, batch_size: int | None = None, seq_len: int | None = None) -> StepFlops:
    """FLOPs of one micro-batch of ``spec`` (optionally at another batch size / sequence length)."""
    shape = spec.model.shape
    b = spec.batch_size if batch_size is None else batch_size
    s = spec.seq_len if seq_len is None else seq_len
    tokens = b * s
    decoder_n, head_n = _weight_numels(spec)
    trained = spec.method == "full"
    per_weight = 6 if trained else 4
    dense = per_weight * (decoder_n + head_n) * tokens

    adapter_n = 0
    if not trained and spec.framework == "litgpt":  # LitGPT's LoRA flags (core/litgpt.py)
        from lora_budget.core.litgpt import adapter_tensors as litgpt_adapters

        adapter_n = sum(numel * count for numel, count, *_ in litgpt_adapters(spec))
    elif not trained:
        chosen = resolve_targets(shape, spec.targets, spec.rank)
        adapter_n = sum(numel * count for numel, count, _ in adapter_tensors(shape, chosen, spec.rank))
    adapter = 6 * adapter_n * tokens

    # attention core, forward, per model: 4 * b * s^2 * a * d * L, halved by causal kernels
    attn_fwd = 4 * b * s * s * shape.heads * shape.head_dim * shape.layers
    flash = spec.attn in ("sdpa", "flash")
    if flash:
        attn_fwd //= 2
        attn_bwd = attn_fwd * 5 // 2  # 2x for the two gradients + 0.5x in-kernel recompute of QK^T
        flash_recompute = attn_fwd // 2
    else:
        attn_bwd = 2 * attn_fwd
        flash_recompute = 0
    attention = attn_fwd + attn_bwd

    recompute = 0
    if spec.grad_ckpt:
        recompute = 2 * decoder_n * tokens + 2 * adapter_n * tokens + attn_fwd

    passes = 2 + (1 if spec.grad_ckpt else 0)  # dequantize in forward, backward (and recompute)
    dequant = round(quantized_numel(spec) * dequant_bytes_per_weight(spec) * passes)
    return StepFlops(
        tokens=tokens,
        dense_flops=dense,
        adapter_flops=adapter,
        attention_flops=attention,
        recompute_flops=recompute,
        flash_recompute_flops=flash_recompute,
        dequant_bytes=dequant,
        forward_flops=2 * (decoder_n + head_n + adapter_n) * tokens + attn_fwd,
    )
