"""Activation offloading planned: what stays on the device when saved tensors go to host memory.

TRL's ``activation_offloading=True`` (``trl/models/activation_offloading.py`` v1.9.0) and torchtune's
``enable_activation_offloading`` (``torchtune/training/_activation_offloading.py``) install
``saved_tensors_hooks`` whose pack hook copies a saved tensor to the host and keeps only an id in
the autograd graph (``runtime/offload.py`` runs the same rules in the trace). Every saved tensor
takes the next id, offloaded or not. What the rules leave on the device:

1. **Kept tensors**: under 1,024 bytes (``min_offload_size``); parameters and buffers (TRL: any
   tensor whose storage is a parameter's, views included; torchtune: ``nn.Parameter`` instances);
   whatever the output head saves (both wrap ``lm_head`` / ``output`` in a no-op hook, which takes
   no ids); under torchtune, the loss, which its recipes take after the context closes.
2. **Second saves (TRL only)**: a storage saved again while its first save is tracked (from its
   offload until it leaves the stash) stays on the device, and the storage then stays kept for the
   rest of the forward. Within a decoder layer these are the tensors two ops save
   (``_Walk.repeated``: a norm's fp32 input and rsqrt, saved by ``pow``/``rsqrt`` and again by
   ``mul``; one input several adapters or linears read; SDPA's output that the o projection keeps).
3. **The forward stash** (``max_fwd_stash_size=5``, ``use_streams=True``): an offloaded tensor's
   device copy lives until an offload five ids later; at the forward's end the offloads among the
   last five ids are still there. ``_tail`` lists the saves after the decoder layers (and, under
   checkpointing, the last layers' checkpoints before them) in the order the ops make them, so
   ``forward_end_bytes`` replays the rules over them at the actual token count.
4. **Backward**: a node brings its offloaded tensors back (a new device copy each); the first node
   that brings any back frees the whole forward stash when it is done, and frees the copies
   brought back by the node before it. So at any moment one node's copies and the previous one's
   are alive. At a layer boundary the held copy is the last one the layer above brought back: the
   fp32 input of its first norm (RMSNorm: 4 h bytes per token, which ``rsqrt``'s and ``pow``'s
   backward bring back last) or LayerNorm's input (c h), or, under checkpointing, its checkpoint.

Under non-reentrant checkpointing (torchtune requires it with offloading) the hooks inside a
checkpointed layer are checkpoint's own, so the offload hooks see each layer's input once (its
checkpoint) and the ops outside the layers. The layer being recomputed holds its saved set as
without offloading, beside its own checkpoint brought back and the copy held from the layer above.

Known error: the tensors under 1 KiB inside the layers are taken as offloaded (at most 1 KiB
each); without checkpointing, a layer's MLP backward is planned with its whole saved set brought
back and its attention backward with its kernel's (upper bounds: the rules hold two nodes' tensors
at a time, so the MLP backward of a SwiGLU layer holds three of its four i-wide tensors); with
eager attention's s x s tensors that bound is high, 19-22 % on the peak of Llama-2-7B LoRA at
b 4 x 1024 and 2 x 2048 (the trace holds the fp32 softmax brought back and its gradient only);
the forward stash inside a layer's forward is bounded by five of its widest tensors. Plan vs trace:
``tests/test_activation_offload.py``, 17 configurations with SDPA (6 of them slow): median 0.02 %,
worst 2.1 % (the checkpointed recompute's own error without offloading).
"""

from __future__ import annotations

from bisect import bisect_right

from lora_budget.core.activations import ActivationModel
from lora_budget.core.lora import resolve_targets
from lora_budget.core.params import module_names
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field
from lora_budget.spec import TrainSpec

MIN_OFFLOAD_BYTES = 1024
"""``min_offload_size``: both sources' default."""
FWD_STASH = 5
"""``max_fwd_stash_size``: both sources' default."""


@dataclass(frozen=True, slots=True)
class Save:
    """One tensor an op saves after the decoder layers, in bytes per token."""

    key: str
    """The storage: a second save of the same key is the same storage (TRL's dedup)."""
    per_token: float
    kind: str = "activation"
    """activation, param (kept, no bytes), or logits (counted by the loss terms, not here)."""


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    """The batch- and sequence-independent terms of activation offloading for one spec; bytes per
    token as (lin, quad) pairs, as ``Coeff`` holds them."""

    rules: str
    """trl or torchtune (``spec.framework``)."""
    grad_ckpt: bool
    tail: tuple[Save, ...]
    """The saves the offload hooks see after the decoder layers (see ``_tail``)."""
    repeated: tuple[float, float]
    """TRL without checkpointing: a layer's tensors saved twice, kept on the device per layer."""
    first_repeated: tuple[float, float]
    norm_held: float
    """Bytes per token of the copy a norm's backward brings back last and holds into the layer below's
    first node (the module docstring, item 4): the final norm's before the last layer, a layer's
    input norm's before the layer under it (without checkpointing)."""
    first_held: float
    """What layer 0 leaves held while the embedding's backward runs (per token)."""
    widest: float
    """Bytes per token of a layer's widest saved tensor (the forward stash's bound inside a layer)."""
    held_at_peak: bool
    """Whether that held copy is still alive when the layer's MLP backward peaks. It goes when the
    first node of the layer that brings anything back is done: with the last linear LoRA-adapted,
    that is its adapter's small ``lora_B`` node (autograd runs the adapter branch, made last, first),
    and with a norm after the MLP (post-norm, sandwich) that norm's; otherwise the node is the
    MLP's own first and big one (full fine-tuning's down projection, a frozen one's product)."""
    input_leaf: bool
    """Under checkpointing with a frozen embedding, transformers' ``enable_input_require_grads`` makes
    the embedding output a leaf that requires grad: its ``AccumulateGrad`` node keeps it on the
    device through backward, offloaded or not."""
    kernel: tuple[float, float] = (0.0, 0.0)
    """What the attention kernel saves (``_kernel``): without checkpointing, the most a layer's
    attention backward holds brought back (its nodes take them two at a time)."""
    cuts: tuple[float, ...] = ()
    """Sorted token counts at which a tail save reaches 1 KiB (``_cuts``)."""
    _per_regime: dict[int, float] = field(default_factory=dict, compare=False, repr=False)
    """Bytes per token left by the tail, per count of its saves at or above 1 KiB (a cache)."""

    def forward_end_bytes(self, tokens: int) -> int:
        """Bytes the rules leave on the device after the tail's saves (kept second saves, kept
        small tensors, the forward stash), logits and parameters excluded, for ``tokens`` = b s.

        Which saves fall under 1 KiB depends on the token count alone; the replay runs once per
        such regime and is cached, so an evaluation is a lookup and a product."""
        regime = bisect_right(self.cuts, tokens)
        per_token = self._per_regime.get(regime)
        if per_token is None:
            per_token = self._per_regime[regime] = self._replay(tokens)
        return int(tokens * per_token)

    def _replay(self, tokens: int) -> float:
        """The pack rules over ``tail`` at ``tokens`` (module docstring, items 1-3), per token."""
        next_id = 0
        tracked: dict[str, int] = {}  # key -> the id holding it (TRL)
        stash: dict[int, str] = {}  # offloaded id -> key: its device copy is alive
        kept: set[str] = set()
        trl = self.rules == "trl"
        sizes: dict[str, float] = {}
        for save in self.tail:
            next_id += 1
            if save.kind != "param":
                sizes[save.key] = 0.0 if save.kind == "logits" else save.per_token
            if trl and save.key in tracked:
                tracked[save.key] = next_id
                kept.add(save.key)
                continue
            if save.kind == "param":
                continue
            if tokens * save.per_token < MIN_OFFLOAD_BYTES:
                kept.add(save.key)
                continue
            for old in [i for i in stash if i <= next_id - FWD_STASH]:
                key = stash.pop(old)
                if tracked.get(key) == old:
                    del tracked[key]
            stash[next_id] = save.key
            if trl:
                tracked[save.key] = next_id
        return sum(sizes[key] for key in kept | set(stash.values()))


def offload_plan(spec: TrainSpec, acts: ActivationModel) -> OffloadPlan:
    """The offloading terms of ``spec`` (``spec.activation_offload``) on the walk's coefficients."""
    s = spec.model.shape
    if acts.layer_repeated is None or acts.first_layer_repeated is None:
        raise LoraBudgetError(
            f"activation offloading is planned on the walked architectures; {spec.model.name}'s coefficients "
            "come from a trace of the model (`lora-budget trace --activation-offload` answers for it)"
        )
    c, h = spec.activation_bytes, s.hidden
    norm_in = c * h + 8 if s.norm == "layer" else 4 * h  # LayerNorm: input, mean, rstd; RMSNorm: fp32 input
    full = spec.method == "full"
    first_rg = full or spec.grad_ckpt  # layer 0's input needs a gradient (LoRA: under checkpointing)
    widest = c * max(
        s.intermediate * (2 if s.fused_gate_up else 1), s.q_width + 2 * s.kv_width if s.fused_qkv else s.q_width, h
    )
    first_held = c * h if spec.grad_ckpt else (norm_in if first_rg else 0.0)
    names = module_names(s)
    last = names.get("down", names.get("proj"))
    targets = () if full else resolve_targets(s, spec.targets, spec.rank)
    return OffloadPlan(
        rules="torchtune" if spec.framework == "torchtune" else "trl",
        grad_ckpt=spec.grad_ckpt,
        tail=(tail := _tail(spec)),
        cuts=tuple(sorted(MIN_OFFLOAD_BYTES / t.per_token for t in tail if t.kind != "param" and t.per_token > 0)),
        repeated=(acts.layer_repeated.lin, acts.layer_repeated.quad),
        first_repeated=(acts.first_layer_repeated.lin, acts.first_layer_repeated.quad),
        norm_held=norm_in,
        first_held=first_held,
        widest=max(widest, 4 * h),
        held_at_peak=s.norm_scheme not in ("post", "sandwich") and (full or last not in targets),
        input_leaf=spec.grad_ckpt and not full,
        kernel=_kernel(spec),
    )


def _kernel(spec: TrainSpec) -> tuple[float, float]:
    """Bytes per token (lin, quad) the attention kernel saves, as ``core/activations.py`` walks it:
    eager attention q, k and v repeated to every head, the fp32 softmax output and its 16-bit cast
    (and Gemma 2's soft-capping tanh); SDPA's math path (Falcon) fp32 q, k, v and probabilities;
    SDPA / flash q, k, v, the output and the fp32 logsumexp."""
    from lora_budget.core.activations import _sdpa_math

    s = spec.model.shape
    c, a = spec.activation_bytes, s.heads
    if spec.attn == "eager":
        quad = 4 + (c if c != 4 else 0) + (c if s.attn_softcap else 0)
        return (3 * c * s.q_width, quad * a)
    if _sdpa_math(s):
        return (4 * (s.q_width + 2 * s.kv_width), 4 * a)
    return (c * (2 * s.q_width + 2 * s.kv_width) + 4 * a, 0.0)


def _tail(spec: TrainSpec) -> tuple[Save, ...]:
    """The saves after the decoder layers, in op order, as transformers' modelling code and the loss
    make them (the ids the pack hook hands out; ``runtime/offload.py`` logs the same sequence):

    - under checkpointing, the last five layers' checkpoints (one save each, c h);
    - the final norm. RMSNorm: ``pow`` keeps the fp32 input (4 h; the input itself when c = 4),
      ``rsqrt`` its output (4), ``mul`` both again (other first), then ``weight * normed`` keeps the
      normed tensor (full fine-tuning) and the weight. LayerNorm: input, weight, bias, mean, rstd.
      The fp32-weight variant (Gemma, OLMo 2) keeps its fp32 normed tensor (4 h) for the weight.
    - lm_head: nothing (its no-op hooks take no ids);
    - TRL's context also holds the loss: per chunk (full-ce: one), ``log_softmax``'s output (logits),
      ``nll_loss``'s input (the same storage), its target (int64) and total weight (a scalar).
    """
    s = spec.model.shape
    c, h, V = spec.activation_bytes, s.hidden, s.vocab
    full = spec.method == "full"
    out: list[Save] = []
    if spec.grad_ckpt:
        out += [Save(f"ckpt{i}", c * h) for i in range(min(s.layers, FWD_STASH), 0, -1)]
    if s.norm == "layer":
        out += [Save("ln_in", c * h), Save("ln_w", 0, kind="param"), Save("ln_b", 0, kind="param")]
        out += [Save("ln_mean", 4), Save("ln_rstd", 4)]
    else:
        out += [Save("x32", 4 * h), Save("rsqrt", 4), Save("rsqrt", 4), Save("x32", 4 * h)]
        if full:
            out.append(Save("normed", (4 if s.norm == "rms_f32" else c) * h))
        out.append(Save("norm_w", 0, kind="param"))
    if spec.framework != "torchtune" and spec.loss_kernel in ("full-ce", "chunked-ce"):
        n = spec.loss_chunks if spec.loss_kernel == "chunked-ce" else 1
        for k in range(n):
            out += [Save(f"logp{k}", 4 * V / n, kind="logits"), Save(f"logp{k}", 4 * V / n, kind="logits")]
            out += [Save(f"target{k}", 8 / n), Save(f"total{k}", 0)]
    return tuple(out)
