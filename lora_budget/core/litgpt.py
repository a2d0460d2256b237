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

from functools import lru_cache

from lora_budget.catalog.shape import ModelShape
from lora_budget.core.activations import _T, ZERO, ActivationModel, Coeff, StepSettings, _Walk
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field, replace
from lora_budget.spec import DTYPE_BYTES, TrainSpec, _version

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


@dataclass(slots=True)
class _LitWalk(_Walk):
    """The reference walk, plus the distinct inputs bitsandbytes <= 0.43.1's ``MatMul4Bit`` keeps as
    ``ctx.tensors`` (a plain attribute, not ``save_for_backward``: backward does not free it, so the
    whole step's set lives as long as its graph, see ``loss_terms``)."""

    matmul_inputs: dict[str, Coeff] = field(default_factory=dict)

    def matmul_input(self, st: StepSettings, x: _T) -> None:
        if st.bnb_input_bytes and x.rg:
            self.save(x)
            self.matmul_inputs.setdefault(x.key, x.size)

    def inputs_total(self) -> Coeff:
        out = ZERO
        for c in self.matmul_inputs.values():
            out = out + c
        return out


def _rmsnorm(w: _LitWalk, st: StepSettings, x: _T, width: int) -> _T:
    """litgpt ``RMSNorm``: ``x.float()``, ``x * rsqrt(mean(x * x) + eps)``, ``* weight.float()``, cast back.

    mul keeps x32 and the rsqrt (4 bytes per token); a trainable weight keeps the fp32 normed x.
    """
    c = st.compute_bytes
    if x.rg:
        w.save(w.new("norm_fp32", 4 * width, True), w.new("rsqrt", 4, True))
    if st.base_trainable:
        w.save(w.new("normed_fp32", 4 * width, True))
    return w.new("norm_out", c * width, x.rg or st.base_trainable)


def _lora_linear(w: _LitWalk, st: StepSettings, x: _T, fan_in: int, fan_out: int, adapted: bool, rank: int) -> _T:
    """``LoRALinear``: ``linear(x) + (dropout(x) @ A.T @ B.T) * scaling``; bitsandbytes <= 0.43.1
    keeps a 4-bit linear's input."""
    c = st.compute_bytes
    if st.base_trainable:
        w.save(x)
    w.matmul_input(st, x)
    if adapted:
        _adapter_input(w, st, x, fan_in)
        w.save(w.new("lora_mid", c * rank, True))  # B's matmul keeps A's output
    return w.new("linear_out", c * fan_out, x.rg or st.base_trainable or adapted)


def _adapter_input(w: _LitWalk, st: StepSettings, x: _T, fan_in: int) -> None:
    """A's matmul keeps its input: ``dropout(x)`` (a new tensor, and a 1-byte mask when x needs a
    gradient) or, with p = 0, x itself."""
    if st.lora_dropout:
        if x.rg:
            w.save(w.new("lora_dropout_mask", fan_in, False))
        w.save(w.new("lora_dropout", st.compute_bytes * fan_in, x.rg))
    else:
        w.save(x)


def _attention(w: _LitWalk, s: ModelShape, st: StepSettings, chosen: frozenset[str], xn: _T) -> tuple[_T, Coeff]:
    """``CausalSelfAttention.forward`` with ``LoRAQKVLinear``; returns (output, tail)."""
    c = st.compute_bytes
    qw, kw = s.q_width, s.kv_width
    n, width = qkv_widths(s, chosen)
    if st.base_trainable:
        w.save(xn)
    w.matmul_input(st, xn)
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


def _mlp(w: _LitWalk, s: ModelShape, st: StepSettings, chosen: frozenset[str], xn: _T) -> _T:
    """``LLaMAMLP``: ``proj(silu(fc_1(x)) * fc_2(x))``; each adapted linear has its own dropout."""
    c, h, i = st.compute_bytes, s.hidden, s.intermediate
    adapted = "mlp" in chosen
    if not st.base_trainable:
        w.matmul_input(st, xn)  # fc_1 and fc_2 share it
    fc1 = _lora_linear(w, st, xn, h, i, adapted, st.rank)
    fc2 = _lora_linear(w, st, xn, h, i, adapted, st.rank)
    if fc1.rg:
        w.save(fc1)  # silu keeps its input
    act = w.new("act", c * i, fc1.rg)
    if act.rg or fc2.rg:
        w.save(act, fc2)
    prod = w.new("prod", c * i, act.rg or fc2.rg)
    return _lora_linear(w, st, prod, i, h, adapted, st.rank)


def _layer(
    s: ModelShape, st: StepSettings, chosen: frozenset[str], input_rg: bool
) -> tuple[Coeff, Coeff, Coeff, Coeff]:
    """(saved, saved by the attention half, attention tail, MatMul4Bit-kept inputs) of one ``Block``."""
    w = _LitWalk()
    c, h = st.compute_bytes, s.hidden
    x = w.new("block_in", c * h, input_rg)
    xn = _rmsnorm(w, st, x, h)
    attn_out, tail = _attention(w, s, st, chosen, xn)
    attn_part = w.total()
    x = w.new("resid", c * h, x.rg or attn_out.rg)
    xn = _rmsnorm(w, st, x, h)
    _mlp(w, s, st, chosen, xn)
    return w.total(), attn_part, tail, w.inputs_total()


def activation_model(spec: TrainSpec, st: StepSettings, dequant_bytes: int) -> ActivationModel:
    """The ``ActivationModel`` of LitGPT's step: its block walked as above, the rest as the
    reference walk (``core/activations.py``) describes the same moments."""
    s = layout(spec.model.shape)
    chosen = parts(spec) if spec.method != "full" else frozenset()
    c, h, i = st.compute_bytes, s.hidden, s.intermediate
    layer, attn, tail, _ = _layer(s, st, chosen, True)
    first, first_attn, first_tail, _ = _layer(s, st, chosen, st.base_trainable)
    w = _LitWalk()
    x = w.new("final_in", c * h, True)
    xn = _rmsnorm(w, st, x, h)
    if st.base_trainable:
        w.save(xn)  # lm_head's weight gradient
    w.matmul_input(st, xn)  # MatMul4Bit 0.42 keeps every chunk's input (views of xn)
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
        dequant_bytes=dequant_bytes * dequant_copies(spec)[1],
    )


FABRIC_OUTPUT_BYTES = 4
"""Fabric's ``_FabricModule.forward`` casts every floating output to ``torch.get_default_dtype()``
(lightning 2.4 ``fabric/wrappers.py`` 143; ``HalfPrecision.convert_output``, ``half.py`` 61-62, and
``BitsandbytesPrecision.convert_output``, ``bitsandbytes.py`` 155-156): fp32, since LitGPT never
changes the default dtype, so the loss reads fp32 copies of the bf16 logits chunks."""


def dequant_copies(spec: TrainSpec) -> tuple[int, int]:
    """Weight-sized tensors alive while a 4-bit linear dequantizes, (forward, backward).

    Lightning's ``_Linear4bit.quantize`` quantizes ``weight.to(dtype=torch.half)`` (lightning 2.4
    ``fabric/plugins/precision/bitsandbytes.py`` 334), so the quantization state records fp16 and
    ``dequantize_4bit`` makes an fp16 weight (bitsandbytes 0.42.0 ``functional.py`` 1025-1026);
    ``MatMul4Bit`` then casts it to the input's dtype, ``.to(A.dtype)`` in its forward (0.42.0
    ``autograd/_functions.py`` 516, the same through 0.49.x) and ``.to(grad_output.dtype)`` in its
    backward (546, still in 0.50): under bf16 the fp16 weight and its bf16 copy exist at once. From
    0.50 the forward runs the ``gemm_4bit`` op instead (planned as one dequantized weight, as before).
    """
    if spec.method != "qlora" or spec.dtype == "fp16":
        return (1, 1)
    return (2 if _version(spec.bitsandbytes) < (0, 50, 0) else 1, 2)


@lru_cache(maxsize=256)
def kept_inputs(spec: TrainSpec) -> int:
    """Bytes per token of the distinct inputs bitsandbytes <= 0.43.1 keeps for one step (0 otherwise).

    ``MatMul4Bit.forward`` stores ``ctx.tensors = (A, B)`` (0.42.0 ``autograd/_functions.py``
    522-523), a ctx attribute that backward never frees: every 4-bit linear's input of the step
    (the qkv, proj, MLP and proj inputs of each block whose input needs a gradient, the final norm's
    output) stays alive while anything references the step's graph. LitGPT's loop keeps the step's
    ``logits`` list (whose chunks hold the graph) until the next forward returns.
    """
    if not spec.bnb_keeps_input:
        return 0
    s = layout(spec.model.shape)
    chosen = parts(spec)
    st = StepSettings(
        compute_bytes=spec.activation_bytes,
        adapter_bytes=DTYPE_BYTES[spec.adapter_dtype],
        base_trainable=False,
        lora_targets=frozenset(),
        rank=spec.rank,
        attn=spec.attn,
        lora_dropout=spec.lora_dropout > 0,
        bnb_input_bytes=spec.activation_bytes,
    )
    layer = _layer(s, st, chosen, True)[3]
    first = _layer(s, st, chosen, False)[3]
    return int(layer.lin * (s.layers - 1) + first.lin + spec.activation_bytes * s.hidden)


@dataclass(frozen=True, slots=True, kw_only=True)
class LossTerms:
    """The logits side of LitGPT's loop in bytes: per token (of T = b s), per row of one 128-token
    chunk (b min(s, 128)), or fixed. ``moments`` turns them into the step's candidate peaks."""

    c_v: int
    """c V: one row of bf16 logits (the head's output)."""
    f_v: int
    """4 V: its fp32 copy (``FABRIC_OUTPUT_BYTES``)."""
    norm: int
    """c h: the final norm's output, alive (as a local of ``GPT.forward``) while the head runs."""
    hidden: int
    """The part of it not already counted in the activations (bitsandbytes 0.42 keeps it there)."""
    kept: int
    """``kept_inputs``: the previous step's MatMul4Bit inputs, per token."""
    head_branch: int
    """lora_head: its B output and scaled copy beside the chunk's pretrained output (2 c V per row)."""
    head_fwd: int
    """A 4-bit head's dequantization in the forward: the weight-sized tensors at once (bytes)."""
    head_once: int
    """One dequantized head in the compute dtype (alive during each chunk's matmul)."""
    head_bwd: int
    """The same in the backward (``dequant_copies``)."""
    previous: bool
    """``spec.previous_step``: the previous step's kept bytes are alive at the peak."""


def loss_terms(spec: TrainSpec) -> dict[str, object]:
    """The peak model's loss terms for ``framework="litgpt"``: everything is in ``litgpt``
    (a ``LossTerms``), read by ``moments``; the reference terms are zero."""
    s = spec.model.shape
    V, h = s.vocab, s.hidden
    c = DTYPE_BYTES[spec.dtype]
    head_lora = spec.method != "full" and "head" in parts(spec)
    once = 0
    if spec.method == "qlora":
        # dequantize_4bit of the head: V h in the compute dtype, and with double quantization the
        # fp32 absmax it first dequantizes (one per block; bitsandbytes functional.dequantize_4bit)
        once = V * h * c + (4 * -(-V * h // spec.quant_blocksize) if spec.double_quant else 0)
    fwd, bwd = dequant_copies(spec)
    terms = LossTerms(
        c_v=c * V,
        f_v=FABRIC_OUTPUT_BYTES * V,
        # the final norm's output is alive through the chunked head's forward unless something
        # keeps it anyway (bitsandbytes 0.42's matmul, counted in the activations)
        norm=c * h,
        hidden=0 if spec.bnb_keeps_input else c * h,
        kept=kept_inputs(spec),
        head_branch=2 * c * V if head_lora else 0,
        head_fwd=once + (fwd - 1) * V * h * c if once else 0,
        head_once=once,
        head_bwd=once + (bwd - 1) * V * h * c if once else 0,
        previous=spec.previous_step,
    )
    return dict(loss_fwd=0, loss_bwd=0, loss_fixed=0, fused_chunk_inc=0, fused_chunk_bytes=0, litgpt=terms)


def moments(t: LossTerms, batch_size: int, seq_len: int) -> tuple[int, int, int, int, int, int]:
    """LitGPT's logits moments at b sequences of s tokens, each beside the step's saved activations:

    (kept bytes through the next forward, those of them that are activations, head moment, loss
    moment, backward moment, evaluation moment).

    - Kept: the previous step's fp32 logits (f V per token: the last chunk's slice keeps its whole
      chunk) and its MatMul4Bit inputs (``kept_inputs``), alive until ``logits = model(...)``
      rebinds after the forward (none with ``previous_step=False``).
    - Head (before that rebinding): at the last chunk, the kept bytes, the final norm's output, the
      other chunks' bf16 logits and the chunk's own matmul: a 4-bit head's dequantization (its fp16
      weight and bf16 copy) or its bf16 output beside the weight (and lora_head's branch); or, at
      the end of Fabric's fp32 cast, every chunk in bf16 and in fp32 beside the kept bytes.
    - Loss (after it): the fp32 logits, every chunk's fp32 ``log_softmax`` (the last chunk is one
      row shorter per sequence) and, with b > 1, the shifted last chunk's contiguous copy.
    - Backward: at its start the fp32 logits, the saved log-softmax and the last chunk's nll and
      log-softmax gradients (f V per row each); at the head's backward, which autograd reaches
      after every chunk's cross-entropy and fp32 cast backward, the fp32 logits (still bound), the
      bf16 gradients of every chunk and the head's dequantization.
    - Evaluation (``validate`` under no_grad after an optimizer step, the last step's kept bytes
      alive): lm_head over the whole sequence (``lm_head_chunk_size=0``), its fp32 cast, the
      ``[..., :-1, :]`` slice copied by ``reshape`` (b > 1: not contiguous) and its fp32
      ``log_softmax`` (``litgpt/finetune/lora.py`` 368-380, ``chunked_cross_entropy`` with
      ``chunk_size=0``).
    """
    T = batch_size * seq_len
    rows = batch_size * min(seq_len, CHUNK)
    shifted = T - batch_size  # tokens with a target
    kept_acts = T * t.kept if t.previous else 0
    kept = T * t.f_v if t.previous else 0
    chunk = rows * (t.c_v + t.head_branch)
    head = kept + T * t.hidden + t.c_v * (T - rows) + max(t.head_fwd, t.head_once + chunk)
    head = max(head, kept + T * (t.c_v + t.f_v))
    last_copy = t.f_v * (rows - batch_size) if batch_size > 1 else 0
    loss = T * t.f_v + shifted * t.f_v + last_copy
    backward = max(
        T * t.f_v + shifted * t.f_v + 2 * t.f_v * (rows - batch_size),
        T * (t.f_v + t.c_v) + t.head_bwd,
    )
    # with one sequence the slice [..., :-1, :] is contiguous and reshape makes a view
    evaluation = kept + max(
        T * t.f_v + shifted * t.f_v * (2 if batch_size > 1 else 1),
        T * (t.c_v + t.f_v),
        T * t.norm + max(t.head_fwd, t.head_once + T * t.c_v),
    )
    return kept, kept_acts, head, loss, backward, evaluation
