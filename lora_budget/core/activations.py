"""Activations: the bytes autograd saves for backward, derived op by op from the modelling code.

Method. We walk one decoder layer the way the transformers 5.x modelling code executes it
(``modeling_llama.py`` and siblings, peft's ``lora/layer.py``, bitsandbytes' ``MatMul4Bit``) and
record, for every op, which tensors its autograd node keeps. The rules come from PyTorch's
``tools/autograd/derivatives.yaml`` and the generated code, which saves an input only when the
gradient that needs it is required:

- ``linear``/``addmm``/``mm``: keeps the input x only if the weight needs a gradient (frozen base
  weights keep nothing but the weight itself, which is not an activation).
- ``pow``, ``silu``, ``gelu``, ``tanh`` (its output), ``log_softmax`` (its output), ``softmax``
  (its output), ``mul`` of two grad-requiring tensors (both), ``mul`` by a constant (nothing).
- ``native_layer_norm``: its input plus fp32 mean and rstd (8 bytes per row).
- SDPA flash / efficient and FlashAttention-2: q, k, v, the output and an fp32 logsumexp of
  ``heads`` floats per token; no s x s tensor. GQA is passed natively (``enable_gqa``), so k and v
  stay at ``kv_heads`` width.
- eager attention: q, repeated k and v, the fp32 softmax output and its cast to the compute
  dtype (two s x s tensors per head), plus one more for Gemma 2's soft-capping ``tanh``.
- a view keeps its whole base storage alive (Phi-3's fused qkv, GPT-2's ``c_attn`` split).
- dropout with p > 0 on CUDA keeps a 1-byte mask per element.

Tensors are identified by key; a tensor saved by several ops counts once (q, k and v projections
all keep the same normed input). Sizes are bytes per token (``lin``) plus bytes per token per
sequence position (``quad``, the s x s attention terms): a layer's saved bytes are
``T * (lin + quad * s)`` for T = batch x seq tokens.

Known error: small per-token tensors (RMSNorm's rsqrt, 4 bytes per token; dropout RNG state;
MoE routing indices) are counted where they are cheap to count and otherwise ignored; the
backward working set is an estimate of the largest gradient buffers alive inside one layer.
"""

from __future__ import annotations

from lora_budget.catalog.shape import ModelShape
from lora_budget.core import compiled
from lora_budget.core.params import module_names
from lora_budget.records import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Coeff:
    """Bytes per token: ``lin + quad * seq_len``."""

    lin: float = 0.0
    quad: float = 0.0

    def __add__(self, other: Coeff) -> Coeff:
        return Coeff(self.lin + other.lin, self.quad + other.quad)

    def scale(self, k: float) -> Coeff:
        return Coeff(self.lin * k, self.quad * k)

    def at(self, seq_len: int) -> float:
        return self.lin + self.quad * seq_len


ZERO = Coeff()


@dataclass(slots=True)
class _T:
    key: str
    size: Coeff
    rg: bool
    """requires_grad"""
    view: str = ""
    """Which view of the storage an op sees (the split q/k/v of a fused projection, the chunked gate
    and up): saves of different views are different tensors to activation offloading."""


@dataclass(slots=True)
class _Walk:
    """Records saved tensors of one decoder layer; a key is counted once."""

    saved: dict[str, Coeff] = field(default_factory=dict)
    saves: dict[tuple[str, str], int] = field(default_factory=dict)
    """How many ops save each view of each key (activation offloading keeps a tensor saved twice on the
    device: ``core/offload.py``)."""
    n: int = 0

    def new(self, name: str, lin: float, rg: bool, quad: float = 0.0) -> _T:
        self.n += 1
        return _T(f"{name}#{self.n}", Coeff(lin, quad), rg)

    def save(self, *tensors: _T) -> None:
        for t in tensors:
            self.saved.setdefault(t.key, t.size)
            view = (t.key, t.view)
            self.saves[view] = self.saves.get(view, 0) + 1

    def total(self) -> Coeff:
        out = ZERO
        for c in self.saved.values():
            out = out + c
        return out

    def repeated(self) -> Coeff:
        """Bytes of the tensors two or more ops save."""
        out = ZERO
        twice = {key for (key, _), n in self.saves.items() if n > 1}
        for key, c in self.saved.items():
            if key in twice:
                out = out + c
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSettings:
    """What the activation walk needs to know about the method."""

    compute_bytes: int
    """c: bytes per element of activations (2 for bf16/fp16)."""
    adapter_bytes: int
    """bytes per element of LoRA weights."""
    base_trainable: bool
    """full fine-tuning: every weight (and norm) needs a gradient."""
    lora_targets: frozenset[str]
    """module names with a LoRA adapter."""
    rank: int
    attn: str
    """eager, sdpa or flash."""
    lora_dropout: bool = False
    """peft runs each adapter on ``dropout(x)`` (LoRA dropout p > 0)."""
    autocast: bool = False
    """The forward runs under ``torch.autocast``: linears and attention take 16-bit (``lowp``) copies
    of any other-dtype input, and those copies are what they keep."""
    lowp: int = 2
    """Bytes per element of autocast's lower-precision dtype (bf16 / fp16)."""
    bnb_input_bytes: int = 0
    """QLoRA on bitsandbytes <= 0.43.1: bytes per element of the compute-dtype input every 4-bit
    matmul keeps for backward (0: newer releases keep nothing)."""
    fused_loss: bool = False
    """A fused linear cross-entropy takes lm_head's input and computes its gradients in the
    forward: lm_head keeps no input of its own."""
    head_trains: bool = False
    """The output head trains even when the base is frozen (a reward model's score head, which peft's
    SEQ_CLS task keeps trainable): it keeps its input for its weight gradient."""
    compiled: bool = False
    """The layer runs under torch.compile: inductor's partitioner decides its saved set (``core/compiled.py``)."""


@dataclass(frozen=True, slots=True)
class ActivationModel:
    """Per-token coefficients of everything activation-shaped in one training step."""

    layer: Coeff
    """Saved bytes of one decoder layer (layers 1..L-1)."""
    first_layer: Coeff
    """Saved bytes of layer 0 (less when its input needs no gradient, as with LoRA)."""
    once: Coeff
    """Saved once per step outside the layers: rotary cos/sin, final norm, lm_head input, masks."""
    checkpoint: Coeff
    """Kept per layer under gradient checkpointing: the layer's input hidden state."""
    head: Coeff
    """The part of ``once`` the final norm and lm_head save: consumed by their backward, before any
    decoder layer's backward runs."""
    forward_transient: Coeff
    """Largest extra bytes alive inside a layer's forward (fp32 norm copies, eager scores, LoRA sums)."""
    forward_transient_kernel: Coeff
    """The attention kernel's part of ``forward_transient`` (eager's scores, the math path's fp32 scores
    and their masked copy): alive before the kernel saves its s x s probabilities, while the rest of
    the layer has saved nothing yet."""
    backward_transient: Coeff
    """Largest gradient working set of a layer's MLP backward (which runs first)."""
    layer_attention: Coeff
    """Saved by the attention half of a layer (everything saved before the MLP): what is left of
    the layer when attention's backward runs."""
    first_layer_attention: Coeff
    """``layer_attention`` for layer 0."""
    backward_transient_attention: Coeff
    """Largest gradient working set of a layer's attention backward (eager: the s x s gradients)."""
    attention_tail: Coeff
    """The part of ``layer_attention`` saved by the o projection and after it: consumed by the
    time the attention kernel's backward peaks."""
    first_attention_tail: Coeff
    """``attention_tail`` for layer 0."""
    batched_extra: Coeff
    """Saved per layer only when the micro-batch has more than one sequence (Falcon's SDPA math
    path: torch.matmul folds the query heads into one GEMM against the single k/v head when b = 1,
    and otherwise expands k and v to every head and copies them)."""
    backward_transient_dequant: Coeff
    """Working set beside the largest dequantized weight: it lives only while its own linear's
    backward runs (down_proj, first in the MLP backward), where the gradients alive are the
    product's (c i) and the incoming and residual gradients (2 c h), not all three MLP ones."""
    dequant_bytes: int
    """Bytes of the largest quantized weight dequantized to the compute dtype (QLoRA/8-bit), 0 otherwise."""
    layer_repeated: Coeff | None = None
    """The part of ``layer`` that two or more ops save (activation offloading keeps it on the device,
    ``core/offload.py``); None where the coefficients do not come from the walk (trace-derived, LitGPT)."""
    first_layer_repeated: Coeff | None = None
    """``layer_repeated`` for layer 0."""


def _norm(w: _Walk, s: ModelShape, st: StepSettings, x: _T, width: int) -> _T:
    """RMSNorm (Llama/Gemma) or LayerNorm; returns the normed output."""
    c = st.compute_bytes
    if s.norm == "layer":
        if x.rg or st.base_trainable:
            w.save(x, w.new("ln_stats", 8, False))
        return w.new("ln_out", c * width, x.rg or st.base_trainable)
    if st.compiled:
        return compiled.rms_norm(w, st, x, width)
    # hidden.to(float32): a copy unless already fp32
    x32 = x if c == 4 else w.new("norm_fp32", 4 * width, x.rg)
    if x.rg:
        rsqrt = w.new("rsqrt", 4, True)
        w.save(x32, rsqrt)  # pow(x32) keeps x32, rsqrt its output
        w.save(x32, rsqrt)  # and mul(x32, rsqrt) both again
    if s.norm == "rms_f32":
        # x32 * rsqrt, multiplied in fp32 by (1 + weight) (Gemma) or weight (OLMo 2), then cast
        normed = w.new("norm_f32_out", 4 * width, x.rg)
        if st.base_trainable:
            w.save(normed)
        return w.new("norm_out", c * width, x.rg or st.base_trainable)
    normed = w.new("norm_cast", c * width, x.rg)  # (x32 * rsqrt).to(input dtype); a new tensor even in fp32
    if st.base_trainable:
        w.save(normed)  # weight * normed keeps normed for the weight gradient
    return w.new("norm_out", c * width, x.rg or st.base_trainable)


def _linear(
    w: _Walk, st: StepSettings, name: str, x: _T, fan_in: int, fan_out: int, in_bytes: int = 0, out_bytes: int = 0
) -> _T:
    """nn.Linear / Conv1D, with a peft LoRA adapter when ``name`` is targeted.

    ``in_bytes`` / ``out_bytes``: element size of the input and output when they differ from the
    activations' (under autocast after kbit preparation, attention's output and the o projection's
    are 16-bit: bitsandbytes returns its output in its input's dtype).
    """
    c = st.compute_bytes
    in_b = in_bytes or c
    if st.base_trainable:
        w.save(x)
    if st.bnb_input_bytes and x.rg:
        # Linear4bit casts x to the compute dtype (a copy unless it already is) and MatMul4Bit
        # keeps that cast; in a kbit-prepared (fp32) model each linear casts its own copy
        w.save(x if in_b == st.bnb_input_bytes else w.new(f"bnb_in_{name}", st.bnb_input_bytes * fan_in, True))
    out_rg = x.rg or st.base_trainable
    if name in st.lora_targets:
        a = st.adapter_bytes
        # peft casts the input to the adapter dtype; a copy unless the dtypes already match
        if a == in_b:
            xa = x
        elif st.compiled:  # one cast of x however many adapters read it (CSE)
            xa = compiled.adapter_input(w, x, a, fan_in)
        else:
            xa = w.new(f"lora_in_{name}", a * fan_in, x.rg)
        if st.lora_dropout:
            # peft: lora_B(lora_A(dropout(x))), each adapted layer with its own nn.Dropout: a new
            # tensor for lora_A to keep (the cast copy is then only a transient) and, when x
            # needs a gradient, dropout's 1-byte mask (CUDA's fused kernel)
            if x.rg:
                w.save(w.new(f"lora_dropout_mask_{name}", fan_in, False))
            xa = w.new(f"lora_dropout_{name}", a * fan_in, x.rg)
        if st.autocast and a != st.lowp:
            # autocast casts lora_A's fp32 input to 16 bits for the matmul: that copy is what it
            # keeps (a new tensor per adapted layer: autocast caches casts of leaf weights only)
            xa = w.new(f"lora_in16_{name}", st.lowp * fan_in, x.rg)
        w.save(xa)  # lora_A keeps its input for dA
        mid = st.lowp if st.autocast else a
        w.save(w.new(f"lora_mid_{name}", mid * st.rank, True))  # lora_B keeps lora_A's output for dB
        out_rg = True
    return w.new(f"{name}_out", (out_bytes or c) * fan_out, out_rg)


def _act(w: _Walk, s: ModelShape, st: StepSettings, g: _T, width: int) -> _T:
    c = st.compute_bytes
    if not g.rg:
        return w.new("act", c * width, False)
    if s.act == "gelu_new":
        # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))): pow keeps x, tanh its output,
        # the final mul both operands (0.5*x and 1+tanh)
        w.save(g, w.new("tanh", c * width, True), w.new("half_x", c * width, True), w.new("one_plus", c * width, True))
    else:
        w.save(g)  # silu / gelu keep their input
    return w.new("act", c * width, True)


def _dropout(w: _Walk, s: ModelShape, x: _T, width: int) -> _T:
    if s.dropout > 0 and x.rg:
        w.save(w.new("dropout_mask", 1 * width, False))
    return x


def _sdpa_math(s: ModelShape) -> bool:
    """Whether ``sdpa`` runs PyTorch's math path for this architecture.

    Falcon's attention always materializes its causal mask (``allow_is_causal_skip=False`` in
    ``modeling_falcon.py``) and passes multi-query keys with one head, broadcast over the query
    heads without ``enable_gqa``; the flash and memory-efficient kernels take neither a
    broadcast head dimension, so SDPA falls back to the math path on CPU and CUDA alike. The
    trace found it: the planner had assumed flash and was 30 % low for Falcon-7B LoRA.
    """
    return s.model_type == "falcon" and s.kv_heads != s.heads


def _attention(w: _Walk, s: ModelShape, st: StepSettings, xin: _T) -> tuple[_T, Coeff, Coeff, Coeff]:
    """Returns (output of the o projection, forward transient, backward transient, tail).

    The tail is what the o projection and the ops after it save (LoRA's copy of its input, an
    eager output only o_proj reads, a dropout mask): backward consumes it before the attention
    kernel's own backward, so it is gone when that backward peaks. A tensor the kernel saves too
    (SDPA's output under full fine-tuning) is not part of it.
    """
    c = st.compute_bytes
    a, k = s.heads, s.kv_heads
    qw, kw = s.q_width, s.kv_width
    names = module_names(s)
    if s.fused_qkv:
        qkv = _linear(w, st, names["qkv"], xin, s.hidden, qw + 2 * kw)
        q, k_, v = (_T(qkv.key, qkv.size, qkv.rg, view) for view in "qkv")  # views of one storage
    else:
        q = _linear(w, st, names["q"], xin, s.hidden, qw)
        k_ = _linear(w, st, names["k"], xin, s.hidden, kw)
        v = _linear(w, st, names["v"], xin, s.hidden, kw)
    rg = q.rg or k_.rg or v.rg
    if s.qk_norm != "none":
        q = _norm(w, s, st, q, qw)
        k_ = _norm(w, s, st, k_, kw)
    if s.learned_positions == 0:
        # rotary: q * cos + rotate_half(q) * sin makes new q and k; cos/sin need no grad, so the
        # pre-rotary q and k are not kept
        q = w.new("q_rot", c * qw, q.rg)
        k_ = w.new("k_rot", c * kw, k_.rg)
    fwd_t = ZERO
    o_bytes = 0
    if st.autocast and c != st.lowp and st.attn != "eager" and not _sdpa_math(s):
        # kbit-prepared model under autocast: SDPA casts its fp32 q, k, v to 16 bits and keeps the
        # copies; its 16-bit output feeds the o projection, whose 4-bit matmul returns 16 bits too
        ck = st.lowp
        q = w.new("q_16", ck * qw, q.rg)
        k_ = w.new("k_16", ck * kw, k_.rg)
        v = w.new("v_16", ck * kw, v.rg)
        o_bytes = ck
    else:
        ck = c
    if st.attn == "eager":
        # under autocast, a kbit-prepared (fp32) model's matmuls cast q, the repeated k and v and
        # the fp32 probabilities to 16 bits and keep those copies; the output is 16-bit
        ck = st.lowp if st.autocast else c
        o_bytes = ck if ck != c else 0
        if rg:
            k_rep = k_ if k == a and ck == c else w.new("k_rep", ck * qw, True)
            v_rep = v if k == a and ck == c else w.new("v_rep", ck * qw, True)
            q_kept = q if ck == c else w.new("q_16", ck * qw, True)
            w.save(q_kept, k_rep, v_rep)
            w.save(w.new("softmax_f32", 0, True, quad=4 * a))
            if ck != 4:  # .to(query.dtype) / autocast's cast: a second s x s tensor unless all is fp32
                w.save(w.new("probs", 0, True, quad=ck * a))
            if s.attn_softcap:
                w.save(w.new("softcap_tanh", 0, True, quad=ck * a))
            if s.dropout > 0:
                w.save(w.new("attn_dropout_mask", 0, False, quad=1 * a))
        # scores in c, scaled/masked copy in c, the fp32 upcast for softmax, alive together briefly
        fwd_t = Coeff(0, (2 * ck + 4) * a)
        bwd_t = Coeff(ck * 3 * qw, (2 * ck + 8) * a)
        out = w.new("attn_out", ck * qw, rg)  # transpose(1, 2).contiguous() copy
    elif _sdpa_math(s):
        # SDPA's math path, which upcasts to fp32: scaled q and k, v, and the fp32 probabilities
        if rg:
            w.save(w.new("q_f32", 4 * qw, True), w.new("k_f32", 4 * kw, True), w.new("v_f32", 4 * kw, True))
            probs = w.new("probs_f32", 0, True, quad=4 * a)
            w.save(probs)  # the softmax keeps its output
            w.save(probs)  # and probs @ v keeps it again
        fwd_t = Coeff(0, 8 * a)  # fp32 scores and their softmax, alive together
        # backward peaks in the softmax backward: the saved probabilities, the gradient of the
        # probabilities and the gradient of the scores (fp32 b x heads x s x s each, the trace
        # shows the three); the output's gradient is consumed by then and q/k/v's gradients
        # come after the probabilities are freed (a later moment is larger only below
        # s = (4 (qw + 2 kw) + c qw) / (4 heads), 98 tokens for Falcon-7B)
        bwd_t = Coeff(0, 8 * a)
        out = w.new("attn_out", c * qw, rg)
    else:
        if rg:
            w.save(q, k_, v)
        out = w.new("attn_out", ck * qw, rg)
        if rg:
            # sdpa keeps its output; flash's output is already (b, s, heads, d) in memory, so
            # transpose(1, 2).contiguous() is a no-op and o_proj reads the same storage
            w.save(out, w.new("lse", 4 * a, False))
        if s.model_type == "phi3":
            # Phi-3's rotary ends in torch.cat, so q is laid out heads-major; the flash output
            # follows q's layout and transpose(1, 2).contiguous() copies it (found by the trace)
            out = w.new("attn_out_copy", ck * qw, rg)
        # flash backward: dq, dk, dv, an fp32 dq accumulator
        bwd_t = Coeff(ck * (qw + 2 * kw) + ck * qw + 4 * qw, 0)
    before_o = w.total()
    o = _linear(w, st, names["o"], out, qw, s.hidden, in_bytes=o_bytes, out_bytes=o_bytes)
    o = _dropout(w, s, o, s.hidden)
    return o, fwd_t, bwd_t, w.total() + before_o.scale(-1)


def _mlp(w: _Walk, s: ModelShape, st: StepSettings, xin: _T) -> tuple[_T, Coeff]:
    """Returns (MLP output, backward transient)."""
    c = st.compute_bytes
    h, i = s.hidden, s.intermediate
    names = module_names(s)
    if s.is_moe:
        return _moe(w, s, st, xin)
    if s.gated_mlp and s.fused_gate_up:
        gu = _linear(w, st, names["gate_up"], xin, h, 2 * i)
        gate, up = (_T(gu.key, gu.size, gu.rg, view) for view in ("gate", "up"))  # views keep the whole 2i
    elif s.gated_mlp:
        gate = _linear(w, st, names["gate"], xin, h, i)
        up = _linear(w, st, names["up"], xin, h, i)
    else:
        fc = _linear(w, st, names["fc"], xin, h, i)
        act = _act(w, s, st, fc, i)
        out = _linear(w, st, names["proj"], act, i, h)
        return _dropout(w, s, out, h), Coeff(3 * c * i + 2 * c * h)
    act = _act(w, s, st, gate, i)
    if act.rg or up.rg:
        # act * up keeps both; compiled, silu(gate) is recomputed from the kept gate
        w.save(up)
        if not st.compiled:
            w.save(act)
    prod = w.new("mlp_prod", c * i, act.rg or up.rg)
    out = _linear(w, st, names["down"], prod, i, h)
    return out, Coeff(3 * c * i + 2 * c * h)


def _moe(w: _Walk, s: ModelShape, st: StepSettings, xin: _T) -> tuple[_T, Coeff]:
    """Sparse MoE block (transformers 5 ``*Experts`` with 3-D expert weights, top-k routing).

    Each token visits ``k`` experts, so expert-side tensors are ``k`` times a dense MLP's per
    token: the gathered input, the fused gate_up output (kept whole by the chunk views), the
    activation, the product and, under full fine-tuning, the inputs of both expert matmuls.
    """
    c = st.compute_bytes
    h, i, e, top = s.hidden, s.intermediate, s.experts, s.experts_per_token
    if st.base_trainable:
        w.save(xin)  # router linear
    rg = xin.rg or st.base_trainable
    if rg:
        w.save(w.new("router_probs", 4 * e, True), w.new("topk_idx", 8 * top, False))
        gathered = w.new("expert_in", top * c * h, True)
        if st.base_trainable:
            w.save(gathered, w.new("expert_prod", top * c * i, True))
        w.save(w.new("expert_gate_up", top * 2 * c * i, True), w.new("expert_act", top * c * i, True))
        w.save(w.new("expert_out", top * c * h, True))  # out * routing weight keeps out
    out = w.new("moe_out", c * h, rg)
    return out, Coeff(top * 3 * c * i + 3 * c * h)


@dataclass(frozen=True, slots=True)
class _LayerWalk:
    """One decoder layer's coefficients. Backward runs the MLP first; by the time attention's
    backward runs, the MLP half's saved tensors are gone, so the two halves peak separately."""

    saved: Coeff
    forward_transient: Coeff
    """The largest of the attention kernel's and the rest of the layer's (norm copies, LoRA sums)."""
    backward_transient: Coeff
    """The MLP backward's working set."""
    attention: Coeff
    """Saved by the attention half."""
    backward_transient_attention: Coeff
    attention_tail: Coeff
    """See ``_attention``."""
    kernel_transient: Coeff
    """The attention kernel's forward transient."""
    repeated: Coeff = ZERO
    """Saved by two or more of the layer's ops (``_Walk.repeated``)."""


def _layer(s: ModelShape, st: StepSettings, input_rg: bool) -> _LayerWalk:
    """Walk one decoder layer."""
    w = _Walk()
    c = st.compute_bytes
    h = s.hidden
    x = w.new("layer_in", c * h, input_rg)
    if s.norm_scheme == "post":  # OLMo 2: attention reads the residual stream directly
        attn_out, fwd_t, bwd_attn, tail = _attention(w, s, st, x)
        attn_part = w.total()
        attn_out = _norm(w, s, st, attn_out, h)
        x = w.new("resid", c * h, x.rg or attn_out.rg)
        mlp_out, bwd_mlp = _mlp(w, s, st, x)
        mlp_out = _norm(w, s, st, mlp_out, h)
    elif s.parallel_block:  # Falcon: one norm feeds attention and MLP
        xn = _norm(w, s, st, x, h)
        attn_out, fwd_t, bwd_attn, tail = _attention(w, s, st, xn)
        attn_part = w.total()
        mlp_out, bwd_mlp = _mlp(w, s, st, xn)
    else:
        xn = _norm(w, s, st, x, h)
        attn_out, fwd_t, bwd_attn, tail = _attention(w, s, st, xn)
        attn_part = w.total()
        if s.norm_scheme == "sandwich":
            attn_out = _norm(w, s, st, attn_out, h)
        x = w.new("resid", c * h, x.rg or attn_out.rg)
        xn = _norm(w, s, st, x, h)
        mlp_out, bwd_mlp = _mlp(w, s, st, xn)
        if s.norm_scheme == "sandwich":
            mlp_out = _norm(w, s, st, mlp_out, h)
    # forward transient: an fp32 copy in the norms, the adapter-dtype sum in a LoRA layer
    widest = max(h, s.intermediate * (2 if s.fused_gate_up else 1), s.q_width + 2 * s.kv_width)
    extra = 4 * h + (st.adapter_bytes * widest if st.lora_targets else 0)
    fwd = fwd_t + Coeff(extra)
    bwd_mlp_total = bwd_mlp + Coeff(2 * c * h)
    bwd_attn_total = bwd_attn + Coeff(2 * c * h)
    return _LayerWalk(w.total(), fwd, bwd_mlp_total, attn_part, bwd_attn_total, tail, fwd_t, w.repeated())


def activation_model(s: ModelShape, st: StepSettings, grad_ckpt: bool, dequant_bytes: int) -> ActivationModel:
    """Coefficients of every activation term for a spec (independent of batch and sequence)."""
    c = st.compute_bytes
    h = s.hidden
    walk = _layer(s, st, input_rg=True)
    # Without checkpointing, layer 0 of a frozen model sees an input that needs no gradient (the
    # embedding is frozen), so ops before the first adapter keep nothing. transformers' gradient
    # checkpointing with peft calls enable_input_require_grads(), which makes it require grad.
    first = walk if st.base_trainable or grad_ckpt else _layer(s, st, input_rg=False)

    w = _Walk()
    if s.learned_positions == 0:
        w.save(w.new("cos_sin", 2 * c * s.head_dim, False))
    if s.dropout > 0:
        w.save(w.new("embed_dropout_mask", h, False))
    shared = w.total()
    x = w.new("final_in", c * h, True)
    xn = _norm(w, s, replace(st, compiled=False), x, h)  # the final norm runs eagerly
    if (st.base_trainable or st.head_trains) and not st.fused_loss:
        w.save(xn)  # lm_head keeps its input for the weight gradient
    once = w.total()
    head = once + shared.scale(-1)
    if st.attn == "eager":
        once = once + Coeff(0, c)  # the 4-D causal mask, b x 1 x s x s, shared by the layers
    elif _sdpa_math(s):
        once = once + Coeff(0, 1)  # Falcon's materialized boolean mask, b x 1 x s x s
    checkpoint = Coeff(c * h)
    return ActivationModel(
        layer=walk.saved,
        first_layer=first.saved,
        once=once,
        head=head,
        checkpoint=checkpoint,
        forward_transient=walk.forward_transient,
        forward_transient_kernel=walk.kernel_transient,
        backward_transient=walk.backward_transient,
        layer_attention=walk.attention,
        first_layer_attention=first.attention,
        backward_transient_attention=walk.backward_transient_attention,
        attention_tail=walk.attention_tail,
        first_attention_tail=first.attention_tail,
        backward_transient_dequant=Coeff(c * s.intermediate + 2 * c * h),
        batched_extra=Coeff(2 * 4 * (s.q_width - s.kv_width)) if _sdpa_math(s) else ZERO,
        dequant_bytes=dequant_bytes,
        layer_repeated=walk.repeated,
        first_layer_repeated=first.repeated,
    )
