"""LitGPT's fine-tuning step (``litgpt finetune lora|full``, litgpt 0.4.13 / commit 00af8b0d).

LitGPT runs its own model code, not transformers', so a ``framework="litgpt"`` spec is planned with
the layout and the ops of ``litgpt/model.py`` and ``litgpt/lora.py``:

- **Layout** (``layout``): one fused ``attn`` Linear of width q + 2 kv for every family, LLaMAMLP's
  ``fc_1`` / ``fc_2`` / ``proj`` (never a fused gate_up), and an lm_head of its own (``GPT`` never
  ties it to ``wte``).
- **LoRA** (``parts``, ``adapter_tensors``): per-part flags ``lora_query/key/value/projection/mlp/head``.
  ``LoRAQKVLinear`` has one A of (r n, h) for the n enabled parts and one B of (sum of their widths, r),
  applied by a grouped ``conv1d``; its input goes through **one** ``lora_dropout`` for q, k and v
  together (lora.py 426), and ``zero_pad`` writes the enabled parts into a full-width zero tensor.
  ``lora_head`` adapts lm_head (a ``LoRALinear`` run per 128-token chunk). Every adapter is bf16
  (``precision: bf16-true``: weights, adapters, gradients and AdamW state in the model dtype).
- **QLoRA**: Fabric's ``BitsandbytesPrecision`` converts every ``nn.Linear``, lm_head included: its
  weight is 4-bit (with its quantization state), and it is dequantized in every chunk's forward and
  backward; on bitsandbytes 0.42.0 (LitGPT's pin) its matmul keeps the final norm's output.
- **Attention** (``_attention``): ``qkv.view(...).permute(...).split(...)``; with grouped queries k and
  v are ``expand``-ed to every query head and ``reshape`` copies q, k and v; RoPE ends in
  ``torch.cat((q_roped, q[..., n_elem:]))``, a new q and k; SDPA keeps q, k, v, its output and the
  fp32 logsumexp; ``y.transpose(1, 2).reshape(B, T, C)`` copies the output for ``proj``.
- **Loss** (``loss_terms``): ``model(input_ids, lm_head_chunk_size=128)`` returns a list of bf16 logits
  chunks; ``chunked_cross_entropy`` (utils.py 293) takes ``cross_entropy`` of each without an fp32
  upcast, keeping each chunk's bf16 ``log_softmax``. The ``logits`` list is rebound only after the next
  forward, so the previous step's logits are alive through it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from lora_budget.catalog.shape import ModelShape
from lora_budget.core.activations import _T, ZERO, ActivationModel, Coeff, StepSettings, _Walk
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import DTYPE_BYTES, TrainSpec

PARTS: tuple[str, ...] = ("query", "key", "value", "projection", "mlp", "head")
"""LitGPT's ``lora_*`` flags (``litgpt/lora.py`` ``Config``)."""

CHUNK = 128
"""``lm_head_chunk_size`` in ``finetune/lora.py`` (and ``chunked_cross_entropy``'s ``chunk_size``)."""

_ALIASES: dict[str, tuple[str, ...]] = {
    "all-linear": ("query", "key", "value", "projection", "mlp"),
    "attn": ("query", "key", "value", "projection"),
    "mlp": ("mlp",),
    "q_proj": ("query",),
    "k_proj": ("key",),
    "v_proj": ("value",),
    "o_proj": ("projection",),
    "gate_proj": ("mlp",),
    "up_proj": ("mlp",),
    "down_proj": ("mlp",),
    "lm_head": ("head",),
}
"""Spec target names -> LitGPT flags. LitGPT's ``lora_mlp`` adapts every MLP linear at once;
``all-linear`` is peft's preset (the decoder linears, not lm_head)."""

SUPPORTED = ("llama", "mistral", "phi3", "gemma")
"""Model types whose LitGPT block is the pre-norm RMSNorm one this module walks (LLaMAMLP, or
GemmaMLP: the same ops with a tanh-GELU; Gemma's RMSNorm adds 1 to its weight, its embedding is
scaled by sqrt(h), neither kept for backward)."""


@lru_cache(maxsize=256)
def _parts(targets: str) -> frozenset[str]:
    chosen: list[str] = []
    for token in targets.split(","):
        key = token.strip()
        if not key:
            continue
        if key in PARTS:
            chosen.append(key)
        elif key in _ALIASES:
            chosen.extend(_ALIASES[key])
        else:
            raise LoraBudgetError(
                f"LitGPT LoRA target {key!r} is not one of its flags ({', '.join(PARTS)}) or a module name "
                "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head); "
                "presets: all-linear, attn, mlp"
            )
    if not chosen:
        raise LoraBudgetError("LoRA targets are empty; use all-linear, attn, mlp or a comma list of LitGPT flags")
    return frozenset(chosen)


def parts(spec: TrainSpec) -> frozenset[str]:
    """The ``lora_*`` flags a spec's ``targets`` set (validated; the rank against every adapted width)."""
    chosen = _parts(spec.targets)
    s = spec.model.shape
    widths = {"query": s.hidden, "key": s.hidden, "value": s.hidden, "projection": s.hidden, "head": s.hidden}
    widths["mlp"] = min(s.hidden, s.intermediate)
    for p in chosen:
        if spec.rank > widths[p]:
            raise LoraBudgetError(f"LoRA rank {spec.rank} is larger than LitGPT's {p} width ({widths[p]})")
    return chosen


def check(spec: TrainSpec) -> None:
    """What the LitGPT walk supports: its refusals name the reason."""
    s = spec.model.shape
    if s.model_type not in SUPPORTED:
        raise LoraBudgetError(
            f"--framework litgpt plans the LLaMA-style block (llama, mistral, phi3, gemma); {s.model_type} runs "
            "another LitGPT block that is not modelled yet"
        )
    if spec.method == "full":
        raise LoraBudgetError(
            "--framework litgpt plans `litgpt finetune lora` (and QLoRA); `finetune full`'s loop (an un-chunked "
            "head, the shifted logits copied) is not modelled yet"
        )
    if spec.method == "lora8bit":
        raise LoraBudgetError("--framework litgpt: 8-bit LoRA (bnb.int8) is not modelled; use --method qlora")
    if spec.gpus > 1 or spec.grad_ckpt:
        raise LoraBudgetError(
            "--framework litgpt is planned for one GPU without checkpointing (its single-device path)"
        )
    if spec.method != "full":
        parts(spec)


@lru_cache(maxsize=256)
def layout(shape: ModelShape) -> ModelShape:
    """LitGPT's ``GPT`` as a ModelShape: fused qkv, separate MLP linears, an untied lm_head."""
    return replace(shape, fused_qkv=True, fused_gate_up=False, tied_embeddings=False, qkv_bias=False)


def qkv_widths(s: ModelShape, chosen: frozenset[str]) -> tuple[int, int]:
    """(n enabled parts, sum of their widths): LoRA A is (r n, h), B is (width sum, r)."""
    widths = [w for p, w in (("query", s.q_width), ("key", s.kv_width), ("value", s.kv_width)) if p in chosen]
    return len(widths), sum(widths)


def adapter_tensors(spec: TrainSpec) -> list[tuple[int, int, tuple[int, int], bool]]:
    """(numel, count, shape, made before the layer's attention backward) of every LoRA tensor.

    The last flag marks the projection's and the MLP's adapters, whose gradients backward makes
    before it reaches the attention kernel (``StaticMemory.layer_gradients_before_attention``).
    """
    s = layout(spec.model.shape)
    chosen = parts(spec)
    r, L, h, i = spec.rank, s.layers, s.hidden, s.intermediate
    out: list[tuple[int, int, tuple[int, int], bool]] = []
    n, width = qkv_widths(s, chosen)
    if n:
        out += [(r * n * h, L, (r * n, h), False), (width * r, L, (width, r), False)]
    if "projection" in chosen:
        out += [(r * s.q_width, L, (r, s.q_width), True), (h * r, L, (h, r), True)]
    if "mlp" in chosen:
        out += [(r * h, 2 * L, (r, h), True), (i * r, 2 * L, (i, r), True)]  # fc_1, fc_2
        out += [(r * i, L, (r, i), True), (h * r, L, (h, r), True)]  # proj
    if "head" in chosen:
        out += [(r * h, 1, (r, h), False), (s.vocab * r, 1, (s.vocab, r), False)]
    return out


# -- the layer walk -------------------------------------------------------------------------------


def _rmsnorm(w: _Walk, st: StepSettings, x: _T, width: int) -> _T:
    """litgpt ``RMSNorm``: ``x.float()``, ``x * rsqrt(mean(x * x) + eps)``, ``* weight.float()``, cast back.

    mul keeps x32 and the rsqrt (4 bytes per token); a trainable weight keeps the fp32 normed x.
    """
    c = st.compute_bytes
    if x.rg:
        w.save(w.new("norm_fp32", 4 * width, True), w.new("rsqrt", 4, True))
    if st.base_trainable:
        w.save(w.new("normed_fp32", 4 * width, True))
    return w.new("norm_out", c * width, x.rg or st.base_trainable)


def _lora_linear(w: _Walk, st: StepSettings, x: _T, fan_in: int, fan_out: int, adapted: bool, rank: int) -> _T:
    """``LoRALinear``: ``linear(x) + (dropout(x) @ A.T @ B.T) * scaling``; bitsandbytes <= 0.43.1
    keeps a 4-bit linear's input."""
    c = st.compute_bytes
    if st.base_trainable:
        w.save(x)
    if st.bnb_input_bytes and x.rg:
        w.save(x)
    if adapted:
        _adapter_input(w, st, x, fan_in)
        w.save(w.new("lora_mid", c * rank, True))  # B's matmul keeps A's output
    return w.new("linear_out", c * fan_out, x.rg or st.base_trainable or adapted)


def _adapter_input(w: _Walk, st: StepSettings, x: _T, fan_in: int) -> None:
    """A's matmul keeps its input: ``dropout(x)`` (a new tensor, and a 1-byte mask when x needs a
    gradient) or, with p = 0, x itself."""
    if st.lora_dropout:
        if x.rg:
            w.save(w.new("lora_dropout_mask", fan_in, False))
        w.save(w.new("lora_dropout", st.compute_bytes * fan_in, x.rg))
    else:
        w.save(x)


def _attention(w: _Walk, s: ModelShape, st: StepSettings, chosen: frozenset[str], xn: _T) -> tuple[_T, Coeff]:
    """``CausalSelfAttention.forward`` with ``LoRAQKVLinear``; returns (output, tail)."""
    c = st.compute_bytes
    qw, kw = s.q_width, s.kv_width
    n, width = qkv_widths(s, chosen)
    if st.base_trainable or (st.bnb_input_bytes and xn.rg):
        w.save(xn)
    if n:
        _adapter_input(w, st, xn, s.hidden)  # one dropout for q, k and v
        w.save(w.new("lora_qkv_mid", c * st.rank * n, True))  # conv1d keeps A's output for dB
        if n < 3:
            # zero_pad's index_copy_ keeps its source (B's output, the enabled parts' width): its
            # backward is grad.index_select(...).expand_as(source) (derivatives.yaml)
            w.save(w.new("lora_qkv_out", c * width, True))
    rg = xn.rg or st.base_trainable or n > 0
    qkv = w.new("qkv", c * (qw + 2 * kw), rg)
    if rg:
        grouped = s.kv_heads != s.heads
        # reshape of the permuted split copies q (and the expanded k, v) with grouped queries; with
        # one query per group they stay views of qkv. RoPE's cat then makes a new q and k.
        v = w.new("v_copy", c * qw, True) if grouped else qkv
        w.save(w.new("q_rope", c * qw, True), w.new("k_rope", c * (qw if grouped else kw), True), v)
        w.save(w.new("sdpa_out", c * qw, True), w.new("lse", 4 * s.heads, False))
    before = w.total()
    y = w.new("y_copy", c * qw, rg)  # y.transpose(1, 2).reshape(B, T, C)
    out = _lora_linear(w, st, y, qw, s.hidden, "projection" in chosen, st.rank)
    return out, w.total() + before.scale(-1)


def _mlp(w: _Walk, s: ModelShape, st: StepSettings, chosen: frozenset[str], xn: _T) -> _T:
    """``LLaMAMLP``: ``proj(silu(fc_1(x)) * fc_2(x))``; each adapted linear has its own dropout."""
    c, h, i = st.compute_bytes, s.hidden, s.intermediate
    adapted = "mlp" in chosen
    if st.bnb_input_bytes and xn.rg and not st.base_trainable:
        w.save(xn)
    fc1 = _lora_linear(w, st, xn, h, i, adapted, st.rank)
    fc2 = _lora_linear(w, st, xn, h, i, adapted, st.rank)
    if fc1.rg:
        w.save(fc1)  # silu keeps its input
    act = w.new("act", c * i, fc1.rg)
    if act.rg or fc2.rg:
        w.save(act, fc2)
    prod = w.new("prod", c * i, act.rg or fc2.rg)
    return _lora_linear(w, st, prod, i, h, adapted, st.rank)


def _layer(s: ModelShape, st: StepSettings, chosen: frozenset[str], input_rg: bool) -> tuple[Coeff, Coeff, Coeff]:
    """(saved, saved by the attention half, attention tail) of one ``Block``."""
    w = _Walk()
    c, h = st.compute_bytes, s.hidden
    x = w.new("block_in", c * h, input_rg)
    xn = _rmsnorm(w, st, x, h)
    attn_out, tail = _attention(w, s, st, chosen, xn)
    attn_part = w.total()
    x = w.new("resid", c * h, x.rg or attn_out.rg)
    xn = _rmsnorm(w, st, x, h)
    _mlp(w, s, st, chosen, xn)
    return w.total(), attn_part, tail


def activation_model(spec: TrainSpec, st: StepSettings, dequant_bytes: int) -> ActivationModel:
    """The ``ActivationModel`` of LitGPT's step: its block walked as above, the rest as the
    reference walk (``core/activations.py``) describes the same moments."""
    s = layout(spec.model.shape)
    chosen = parts(spec) if spec.method != "full" else frozenset()
    c, h, i = st.compute_bytes, s.hidden, s.intermediate
    layer, attn, tail = _layer(s, st, chosen, True)
    first, first_attn, first_tail = _layer(s, st, chosen, st.base_trainable)
    w = _Walk()
    x = w.new("final_in", c * h, True)
    xn = _rmsnorm(w, st, x, h)
    if st.base_trainable or st.bnb_input_bytes:
        w.save(xn)  # lm_head's weight gradient / MatMul4Bit 0.42 keeps every chunk's input (views of xn)
    if "head" in chosen:
        _adapter_input(w, st, xn, h)
        w.save(w.new("head_mid", c * spec.rank, True))
    once = w.total()
    qkv = s.q_width + 2 * s.kv_width
    # forward transients: the fp32 RoPE products of q (x * cos, rotated * sin, their sum) beside the
    # bf16 q; the LoRA branch of the fused qkv (zeros, scaled copy) beside its pretrained output
    rope = Coeff(3 * 4 * s.q_width)
    lora_sum = Coeff(3 * c * qkv) if "query" in chosen or "key" in chosen or "value" in chosen else ZERO
    fwd = Coeff(max(rope.lin, lora_sum.lin) + 4 * h)
    bwd_mlp = Coeff(3 * c * i + 4 * c * h)
    bwd_attn = Coeff(c * (s.q_width + 2 * s.kv_width) + c * s.q_width + 4 * s.q_width + 2 * c * h)
    return ActivationModel(
        layer=layer,
        first_layer=first,
        once=once,
        head=once,
        checkpoint=Coeff(c * h),
        forward_transient=fwd,
        forward_transient_kernel=ZERO,
        backward_transient=bwd_mlp,
        layer_attention=attn,
        first_layer_attention=first_attn,
        backward_transient_attention=bwd_attn,
        attention_tail=tail,
        first_attention_tail=first_tail,
        batched_extra=ZERO,
        backward_transient_dequant=Coeff(c * i + 2 * c * h),
        dequant_bytes=dequant_bytes,
    )


def loss_terms(spec: TrainSpec) -> dict[str, float | int]:
    """Logits bytes of LitGPT's chunked loss, per token (T = b s) and per sequence row.

    - Forward, at the end of the last lm_head chunk: the new logits (c V) and the previous step's,
      still bound to ``logits`` (c V), beside the final norm's output (c h); lora_head adds its
      chunk's B output and scaled copy (2 c V per chunk token); a 4-bit head its dequantized
      weight (V h c, plus the fp32 absmax under double quantization), alive only inside one
      chunk's matmul, in forward and again in backward.
    - Loss: the logits and every chunk's bf16 ``log_softmax`` output (c V each); with more than one
      row, ``logits[-1][..., :-1, :]`` is not contiguous and the loss's ``reshape`` copies it (c V
      per chunk token, until ``log_softmax`` has read it).
    - Backward start: the logits (still bound), the saved outputs, and the first chunk's nll and
      log-softmax gradients (2 c V per chunk token).
    """
    s = spec.model.shape
    V, h = s.vocab, s.hidden
    c = DTYPE_BYTES[spec.dtype]
    head_lora = spec.method != "full" and "head" in parts(spec)
    dequant = 0
    if spec.method == "qlora":
        # dequantize_4bit of the head: V h in the compute dtype, and with double quantization the
        # fp32 absmax it first dequantizes (one per block; bitsandbytes functional.dequantize_4bit)
        dequant = V * h * c + (4 * -(-V * h // spec.quant_blocksize) if spec.double_quant else 0)
    # the final norm's output (c h) is alive through the chunked head's forward unless something
    # keeps it anyway (bitsandbytes 0.42's matmul, counted in the activations)
    hidden = 0 if spec.bnb_keeps_input else c * h
    return dict(
        loss_fwd=2 * c * V + hidden,
        loss_bwd=2 * c * V,
        loss_fixed=dequant,
        fused_chunk_inc=0,
        fused_chunk_bytes=0,
        litgpt=(c * V, 2 * c * V if head_lora else 0, c * V, 2 * c * V),
    )
