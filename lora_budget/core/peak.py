"""The step as a timeline: the peak is the largest live total over its phases, not a sum of maxima.

Reference step (what the trace engine runs and README.md describes), at step >= 2 so optimizer
state exists, with ``optimizer.zero_grad(set_to_none=True)`` after each step and the loss taken as
``loss = model(input_ids, labels=labels).loss`` (the output object, and with it the logits, is
dropped before ``backward``, as the transformers Trainer does):

=================  ==========================================================================
phase              live besides weights, quantization state, adapters, master weights, optimizer
=================  ==========================================================================
forward            activations of every layer + the last layer's forward transients
loss               activations + logits (c) + their fp32 copy (4) + log_softmax output (4) per V
backward (start)   activations + log_softmax output, its incoming gradient and the gradient of
                   the fp32 logits: 12 bytes per vocabulary entry per token
backward (last)    activations + lm_head/final-norm gradients + the first layer's backward
                   working set (with checkpointing: checkpoints + one recomputed layer)
backward (first)   first layer's activations + every gradient but the embeddings' + working set
backward (embed)   every gradient + the embedding output's gradient (full fine-tuning)
optimizer          every gradient + optimizer state + the step's temporaries
=================  ==========================================================================

With gradient accumulation > 1 the previous micro-batch's gradients are alive in every phase.
Logits: transformers' ``ForCausalLMLoss`` upcasts with ``logits.float()`` and calls
``cross_entropy``; ``log_softmax`` keeps its fp32 output and ``nll_loss`` backward materialises
a dense fp32 gradient of the same size, so the spike is (c + 8) V bytes/token in the forward and
12 V bytes/token at the start of backward. Gemma 2's final soft-capping keeps one more c V tensor.
"""

from __future__ import annotations

from functools import lru_cache

from lora_budget.breakdown import Breakdown
from lora_budget.core.activations import ActivationModel, Coeff, StepSettings, activation_model
from lora_budget.core.lora import resolve_targets
from lora_budget.core.objectives import objective_loss
from lora_budget.core.static import StaticMemory, static_memory
from lora_budget.records import dataclass, field
from lora_budget.spec import DTYPE_BYTES, TrainSpec

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:  # LitGPT's loop and activation offloading are imported by the specs that use them
    from lora_budget.core.litgpt import LossTerms
    from lora_budget.core.objectives import ObjectiveLoss
    from lora_budget.core.offload import OffloadPlan


@dataclass(frozen=True, slots=True)
class PeakModel:
    """Everything about a spec that does not depend on batch size and sequence length.

    ``breakdown(b, s)`` is a handful of multiply-adds, which is what makes the fit search fast.
    """

    spec: TrainSpec
    static: StaticMemory
    acts: ActivationModel
    overhead_bytes: int
    _k: _Constants | None = field(default=None, init=False, repr=False, compare=False)

    def peak_bytes(self, batch_size: int, seq_len: int) -> int:
        """Peak total in bytes; the fast path the fit search calls."""
        return self._k.base + max([p[1] + p[2] + p[3] + p[4] for p in self._phases(batch_size, seq_len)])

    def fit_bytes(self, batch_size: int, seq_len: int) -> int:
        """Bytes that must fit in device memory: the peak less optimizer state the driver can page out."""
        return self.peak_bytes(batch_size, seq_len) - self.static.optimizer_pageable

    def __post_init__(self) -> None:
        object.__setattr__(self, "_k", _constants(self))

    def _phases(self, batch_size: int, seq_len: int) -> list[tuple[str, int, int, int, int]]:
        """(phase, gradients, activations, logits, temporaries) at each candidate peak.

        Everything that does not depend on batch and sequence is in ``self._k`` (``_constants``),
        so an evaluation is plain float arithmetic.
        """
        k = self._k
        batch_size *= k.seq_mult  # sequences in the forward: chosen + rejected for preference pairs
        T = batch_size * seq_len
        L = k.layers
        once = T * (k.once[0] + k.once[1] * seq_len)
        extra = k.batched_extra if batch_size > 1 else 0  # part of the attention half
        layer = T * ((k.layer[0] + k.layer[1] * seq_len) + extra)
        mlp_half = layer - T * ((k.layer_attention[0] + k.layer_attention[1] * seq_len) + extra)
        # when the attention kernel's backward peaks, the o projection's saved tensors are gone too
        attn_done = mlp_half + T * (k.attention_tail[0] + k.attention_tail[1] * seq_len)
        # the decoder layers' backward runs after the final norm's and lm_head's, whose saved
        # tensors are gone by then
        layers_once = once - T * (k.head[0] + k.head[1] * seq_len)
        if k.grad_ckpt:
            ckpt = T * (k.checkpoint[0] + k.checkpoint[1] * seq_len)
            kept = 0 if k.ckpt_offload else L  # offloaded: every checkpoint in host memory
            all_acts = once + kept * ckpt
            # layer L-1 recomputed (from its checkpoint, brought back to the device when offloaded)
            acts_last = layers_once + max(kept, 1) * ckpt + layer
            acts_first = layers_once + ckpt + layer  # layer 0 recomputed, its input kept
            first_attn_done = attn_done
            # in the forward, non-reentrant checkpointing drops what each op saves as soon as it
            # is saved: the layer being computed holds only its working set (the trace shows it)
        else:
            first = T * ((k.first_layer[0] + k.first_layer[1] * seq_len) + extra)
            all_acts = once + first + (L - 1) * layer
            acts_last = layers_once + first + (L - 1) * layer
            acts_first = layers_once + first
            first_mlp_half = first - T * ((k.first_layer_attention[0] + k.first_layer_attention[1] * seq_len) + extra)
            first_attn_done = first_mlp_half + T * (k.first_attention_tail[0] + k.first_attention_tail[1] * seq_len)
        if k.offload is not None:  # saved tensors in host memory (core/offload.py)
            all_acts, fwd_acts, acts_last, acts_first, attn_last, attn_first = _offloaded(
                k, T, seq_len, layers_once, layer
            )
            if attn_last is not None:  # the attention backward holds at most its kernel's tensors brought back
                attn_done = max(attn_done, acts_last - attn_last)
                first_attn_done = max(first_attn_done, acts_first - attn_first)
        # sliding-window layers under sdpa: once the sequence reaches the window transformers
        # materializes the local mask, and SDPA turns it into a float mask (b x 1 x s x s in the
        # compute dtype) that each such layer keeps for backward; checkpointing keeps only the
        # recomputed layer's
        if k.sliding_layers and seq_len >= k.sliding_window:
            mask = T * seq_len * k.c
            # with a mask transformers repeats grouped k/v heads to every query head (repeat_kv)
            # instead of passing enable_gqa, and SDPA keeps the copies; one k/v head repeats as a view
            mask += T * k.repeat_kv
            if k.grad_ckpt:
                acts_last += mask
                acts_first += mask
            else:
                all_acts += mask * k.sliding_layers
                acts_last += mask * k.sliding_layers
                acts_first += mask
        loss_fwd = T * k.loss_fwd + k.loss_fixed
        if batch_size > 1:
            loss_fwd += T * k.shift_copy  # one row's [..., :-1, :] is contiguous: .contiguous() copies nothing
        loss_bwd = T * k.loss_bwd + k.loss_fixed
        kept_logits = kept_acts = 0
        litgpt: tuple[tuple[str, int, int, int, int], ...] = ()
        if k.litgpt is not None:  # LitGPT's loop, Fabric's fp32 outputs, 128-token head chunks, its validate
            from lora_budget.core.litgpt import moments as litgpt_moments

            kept_logits, kept_acts, head, loss_fwd, loss_bwd, evaluated = litgpt_moments(k.litgpt, batch_size, seq_len)
            litgpt = (
                ("loss", k.grads[0], int(all_acts) + kept_acts, head, 0),
                ("evaluation", 0, kept_acts, evaluated, 0),
            )
        if k.objective is not None:
            loss_fwd, loss_bwd = k.objective.logits_bytes(batch_size, seq_len)
        if k.fused_chunk_inc:
            # Liger's fused linear cross-entropy makes one chunk of logits at a time:
            # next_power_of_2(ceil(T / ceil(V / h))) tokens, at most T
            chunk = min(T, 1 << (-(-T // k.fused_chunk_inc) - 1).bit_length())
            loss_fwd += chunk * k.fused_chunk_bytes
        fwd_transient = T * (k.forward_transient[0] + k.forward_transient[1] * seq_len) + k.dequant_bytes
        if k.offload is None:
            fwd_acts = all_acts
        if not k.grad_ckpt and k.kernel_transient[1] and k.offload is None:
            # an s x s attention kernel (eager, SDPA's math path) peaks before it saves its
            # probabilities, while the last layer holds only what it saved up to there (at most its
            # attention half's per-token tensors); the layer's other transients come at moments
            # when its whole saved set may exist, without the kernel's
            kernel = T * (k.kernel_transient[0] + k.kernel_transient[1] * seq_len)
            last = layer if L > 1 else first
            at_kernel = all_acts - last + T * (k.layer_attention[0] + extra)
            other = fwd_transient - kernel  # a dequantized weight lives only inside its own linear
            if at_kernel + kernel > all_acts + other:
                fwd_acts, fwd_transient = at_kernel, kernel
            else:
                fwd_transient = other
        # QLoRA/8-bit: the dequantized weight and the layer's widest gradients are not alive at once
        bwd_transient = max(
            T * (k.backward_transient[0] + k.backward_transient[1] * seq_len),
            k.dequant_bytes + T * (k.backward_transient_dequant[0] + k.backward_transient_dequant[1] * seq_len),
        )
        # attention's backward runs after the MLP's, whose saved tensors are gone by then
        attn_transient = (
            T * (k.backward_transient_attention[0] + k.backward_transient_attention[1] * seq_len) + k.dequant_attn_bytes
        )
        g_fwd, head_grads, layer_grads, early_grads, grads = k.grads
        embed_temp = T * k.embed_per_token + k.embed_fixed
        chunked_head = []
        if k.chunk_head_grad:
            # chunked-ce with a trainable lm_head: autograd runs every chunk's loss backward first
            # (those nodes were made after all the head's), leaving each chunk's 16-bit logits
            # gradient; the head's backward then takes the chunks one by one and adds each weight
            # gradient to the sum out of place: sum, new gradient and new sum alive at once
            n, g = k.loss_chunks, k.chunk_logit_grad
            chunked_head.append(("backward", g_fwd, int(all_acts), int(T * g * (n - 1)), k.chunk_head_grad))
            if n >= 2:
                chunked_head.append(("backward", g_fwd, int(all_acts), int(T * g * (n - 2)), 3 * k.chunk_head_grad))
        generation: tuple[tuple[str, int, int, int, int], ...] = ()
        if k.kv_bytes:
            # GRPO's generation (transformers' generate, steps_per_generation = accumulation steps)
            # runs before the step's forward, with no gradients alive (set to None at the last step):
            # the KV cache of every sequence at full length and one fp32 copy of the last
            # position's logits per sequence (``next_token_logits ... dtype=torch.float32``)
            rows = batch_size * k.gen_steps
            generation = (("generation", 0, 0, rows * k.vocab4, rows * seq_len * k.kv_bytes),)
        evaluation: tuple[tuple[str, int, int, int, int], ...] = ()
        if k.eval_batch:
            # an evaluation step after an optimizer step, under no_grad: no gradients, nothing saved; the
            # loss's logits spike at the eval batch's tokens, beside the final hidden state
            te = k.eval_batch * seq_len
            evaluation = (("evaluation", 0, 0, int(te * k.loss_fwd + k.loss_fixed), te * k.eval_hidden),)
        return [
            ("forward", g_fwd, int(fwd_acts) + kept_acts, kept_logits, int(fwd_transient)),
            ("loss", g_fwd, int(all_acts) + k.autocast_fwd, int(loss_fwd), 0),
            ("backward", g_fwd, int(all_acts) + k.autocast_bwd, int(loss_bwd), 0),
            ("backward", head_grads, int(acts_last), 0, int(bwd_transient)),
            ("backward", head_grads + early_grads, int(acts_last - attn_done), 0, int(attn_transient)),
            ("backward", layer_grads, int(acts_first), 0, int(bwd_transient)),
            ("backward", layer_grads + early_grads, int(acts_first - first_attn_done), 0, int(attn_transient)),
            ("backward", grads, int(T * k.offload.first_held) if k.offload else 0, 0, int(embed_temp)),
            ("optimizer", grads, 0, 0, k.optimizer_step_temp),
            *chunked_head,
            *generation,
            *evaluation,
            *litgpt,
        ]

    def breakdown(self, batch_size: int, seq_len: int) -> Breakdown:
        """Per-category bytes at the peak phase."""
        st = self.static
        phase, grads, acts, logits, temp = max(
            self._phases(batch_size, seq_len), key=lambda p: p[1] + p[2] + p[3] + p[4]
        )
        return Breakdown(
            weights=st.weights,
            quant_state=st.quant_state,
            adapter=st.adapter,
            master_weights=st.master_weights,
            optimizer=st.optimizer,
            overhead=self.overhead_bytes,
            gradients=grads,
            activations=acts,
            logits=logits,
            temporaries=temp,
            phase=phase,
        )


@dataclass(frozen=True, slots=True)
class _Constants:
    """The batch- and sequence-independent numbers of ``PeakModel._phases``; coefficient pairs are
    (bytes per token, bytes per token per position), as ``Coeff`` holds them."""

    base: int
    """Weights, quantization state, adapters, master weights, optimizer state and overhead: live in
    every phase."""
    layers: int
    c: int
    grad_ckpt: bool
    once: tuple[float, float]
    head: tuple[float, float]
    layer: tuple[float, float]
    first_layer: tuple[float, float]
    layer_attention: tuple[float, float]
    first_layer_attention: tuple[float, float]
    attention_tail: tuple[float, float]
    first_attention_tail: tuple[float, float]
    checkpoint: tuple[float, float]
    forward_transient: tuple[float, float]
    kernel_transient: tuple[float, float]
    backward_transient: tuple[float, float]
    backward_transient_dequant: tuple[float, float]
    backward_transient_attention: tuple[float, float]
    batched_extra: float
    dequant_bytes: int
    dequant_attn_bytes: int
    sliding_layers: int
    """Layers keeping a materialized sliding-window mask under sdpa/flash (0: none)."""
    sliding_window: int
    repeat_kv: int
    """Bytes per token of k/v repeated to every query head beside such a mask."""
    loss_fwd: float
    """Logits spike per token in the loss forward (full-ce: c V + 8 V for the fp32 copy and log_softmax)."""
    loss_bwd: float
    """Per token at the start of backward (full-ce: 12 V)."""
    loss_fixed: int
    """Loss-kernel bytes independent of the tokens (fused-ce: the lm_head weight gradient it makes)."""
    fused_chunk_inc: int
    """fused-ce: ceil(V / h), the divisor of Liger's chunk size (0: not fused)."""
    fused_chunk_bytes: int
    """fused-ce: bytes per token of one logits chunk (c V)."""
    chunk_head_grad: int
    """chunked-ce with full fine-tuning: bytes of one lm_head weight gradient (0 otherwise)."""
    chunk_logit_grad: float
    """chunked-ce: bytes per token of one chunk's logits gradient (c V / n)."""
    loss_chunks: int
    autocast_fwd: int
    """16-bit weight copies autocast makes that are alive in the loss phase (see ``_autocast_copies``)."""
    autocast_bwd: int
    """The part of them still alive when backward starts."""
    grads: tuple[int, int, int, int, int]
    """Gradients alive: (forward and loss, last layer, first layer, made before a layer's attention
    kernel, all)."""
    embed_per_token: int
    embed_fixed: int
    optimizer_step_temp: int
    kv_bytes: int
    """grpo with transformers' generate: KV-cache bytes per token (2 L kv_width c), else 0."""
    gen_steps: int
    """grpo: micro-batches generated at once (``steps_per_generation``, TRL's default: the accumulation steps)."""
    vocab4: int
    """4 V: one fp32 logits row."""
    eval_batch: int
    """Sequences per evaluation step (0: none planned)."""
    ckpt_offload: bool
    """Gradient checkpoints in host memory (``spec.ckpt_offload``)."""
    eval_hidden: int
    """Bytes per token of the final hidden state beside the evaluation's logits (c h)."""
    seq_mult: int
    """Sequences per example in the forward (``spec.sequences_per_example``)."""
    objective: ObjectiveLoss | None
    """The logits terms of a non-sft objective (``core/objectives.py``), in place of the loss kernel's."""
    offload: OffloadPlan | None = None
    """Activation offloading's terms (``core/offload.py``); None without it."""
    litgpt: LossTerms | None = None
    """litgpt-ce: the logits side of LitGPT's loop (``core/litgpt.py`` ``loss_terms``, read by its
    ``moments``); None for other kernels."""
    shift_copy: float = 0
    """full-ce before transformers 4.49: the shifted fp32 copy of the logits per token (4 V), made only
    when b > 1 (``_full_ce_forward``); 0 otherwise."""


def _pair(coeff: Coeff) -> tuple[float, float]:
    return (coeff.lin, coeff.quad)


def _constants(model: PeakModel) -> _Constants:
    spec, st, a = model.spec, model.static, model.acts
    s = spec.model.shape
    c = spec.activation_bytes
    V = s.vocab
    accum = spec.grad_accum > 1
    sliding = s.sliding_layers if (s.sliding_layers and spec.attn != "eager") else 0
    softcap = c * V if s.final_softcap else 0
    # layer 0's backward starts with every gradient but its own and the embeddings'; as it
    # proceeds its activations give way to its gradients, and the embedding phase (every
    # gradient) covers its end
    before_first = st.gradients - st.embedding_gradients - st.layer_gradients
    grads = (
        st.gradients if accum else 0,
        st.gradients if accum else st.head_gradients,
        st.gradients if accum else before_first,
        # a layer's MLP and o projection have their gradients by the time its attention kernel's
        # backward runs
        0 if accum else st.layer_gradients_before_attention,
        st.gradients,
    )
    # the embedding backward: every gradient, the incoming gradient of the embedding output
    # (T h c) and, for tied embeddings, a second vocabulary-sized gradient added into the first
    full = spec.method == "full"
    logits_c = 2 if spec.autocast_on else c  # autocast casts even an fp32 lm_head's matmul to 16 bits
    return _Constants(
        base=st.weights + st.quant_state + st.adapter + st.master_weights + st.optimizer + model.overhead_bytes,
        layers=s.layers,
        c=c,
        grad_ckpt=spec.grad_ckpt,
        once=_pair(a.once),
        head=_pair(a.head),
        layer=_pair(a.layer),
        first_layer=_pair(a.first_layer),
        layer_attention=_pair(a.layer_attention),
        first_layer_attention=_pair(a.first_layer_attention),
        attention_tail=_pair(a.attention_tail),
        first_attention_tail=_pair(a.first_attention_tail),
        checkpoint=_pair(a.checkpoint),
        forward_transient=_pair(a.forward_transient),
        kernel_transient=_pair(a.forward_transient_kernel),
        backward_transient=_pair(a.backward_transient),
        backward_transient_dequant=_pair(a.backward_transient_dequant),
        backward_transient_attention=_pair(a.backward_transient_attention),
        batched_extra=a.batched_extra.lin,
        dequant_bytes=a.dequant_bytes,
        dequant_attn_bytes=st.dequant_attn_bytes,
        sliding_layers=sliding,
        sliding_window=s.sliding_window,
        repeat_kv=2 * c * (s.q_width - s.kv_width) if 1 < s.kv_heads < s.heads else 0,
        **_offloaded_softcap(spec, _loss_terms(spec, logits_c, softcap), softcap),
        **_autocast_copies(spec, st.adapter),
        chunk_head_grad=(V * s.hidden * DTYPE_BYTES[spec.dtype] if spec.loss_kernel == "chunked-ce" and full else 0),
        chunk_logit_grad=logits_c * V / spec.loss_chunks,
        loss_chunks=spec.loss_chunks,
        grads=grads,
        embed_per_token=s.hidden * c if full else 0,
        embed_fixed=st.embedding_grad_temp if full else 0,
        optimizer_step_temp=st.optimizer_step_temp,
        kv_bytes=2 * s.layers * s.kv_width * spec.compute_bytes if spec.objective == "grpo" and not spec.vllm else 0,
        gen_steps=spec.grad_accum,
        vocab4=4 * V,
        eval_batch=spec.eval_batch_size,
        ckpt_offload=spec.ckpt_offload,
        eval_hidden=c * s.hidden,
        seq_mult=spec.sequences_per_example,
        objective=objective_loss(spec, logits_c),
        offload=_offload_plan(spec, a) if spec.activation_offload else None,
    )


def _offloaded(k: _Constants, T: int, seq_len: int, shared: float, layer: float) -> tuple[float, ...]:
    """(all_acts, fwd_acts, acts_last, acts_first, attention_last, attention_first) with the saved
    tensors in host memory: what the offloading rules leave on the device (``core/offload.py``).
    ``shared``: the saves outside the layers that stay (rotary cos/sin, masks); ``layer``: one layer's
    saved set (as it is recomputed, or brought back). Without checkpointing, the attention backward
    of the last and the first layer holds the kept second saves and its kernel's tensors brought back
    (None under checkpointing, where the recomputed layer is as without offloading)."""
    from lora_budget.core.offload import FWD_STASH

    o, L = k.offload, k.layers
    end = o.forward_end_bytes(T)
    held = T * o.norm_held if o.held_at_peak else 0
    if k.grad_ckpt:
        ckpt = T * (k.checkpoint[0] + k.checkpoint[1] * seq_len)
        # a frozen embedding's output made to require grad (enable_input_require_grads) is a leaf:
        # its AccumulateGrad node keeps it alive whatever the hooks do with the checkpoint's save
        shared += ckpt if o.input_leaf else 0
        # in the forward the stash holds the last five checkpoints; in backward a layer is recomputed
        # beside its own checkpoint brought back and the copy held from above (the final norm's x32
        # for the last layer, the next layer's checkpoint for the others)
        return (
            shared + end,
            shared + min(L, FWD_STASH) * ckpt,
            shared + held + ckpt + layer,
            shared + ((ckpt if L > 1 else held) if o.held_at_peak else 0) + ckpt + layer,
            None,
            None,
        )
    rep = T * (o.repeated[0] + o.repeated[1] * seq_len)
    first_rep = T * (o.first_repeated[0] + o.first_repeated[1] * seq_len)
    first = T * (k.first_layer[0] + k.first_layer[1] * seq_len)
    below = first_rep + (L - 2) * rep if L > 1 else 0  # kept second saves of the layers under the last
    last = layer if L > 1 else first
    kernel = T * (o.kernel[0] + o.kernel[1] * seq_len)
    return (
        shared + first_rep + (L - 1) * rep + end,
        # the s x s tensors a layer keeps twice (SDPA math's probabilities) are its kernel's, the transient
        shared + below + min(last, T * o.repeated[0] + FWD_STASH * T * o.widest),
        shared + held + below + last,
        shared + held + first,  # layer 0 brought back beside the copy layer 1's (or the final) norm left
        shared + below + rep + kernel,
        shared + first_rep + kernel,
    )


def _offloaded_softcap(spec: TrainSpec, terms: dict[str, float | int], softcap: int) -> dict[str, float | int]:
    """Gemma 2's final soft-capping runs in the model's forward after lm_head, inside TRL's offloading
    context: its tanh output goes to the host (kept on the device only by the forward stash, which
    the loss's first backward node frees), so backward starts without it; it comes back later, for
    the tanh's own backward, when the loss's 12 V are gone. torchtune's context ends at the head."""
    if spec.activation_offload and spec.framework != "torchtune" and spec.loss_kernel == "full-ce" and softcap:
        return {**terms, "loss_bwd": terms["loss_bwd"] - softcap}
    return terms


SHIFTED_LABELS_FROM = (4, 49, 0)
"""transformers release whose ``ForCausalLMLoss`` pads and shifts the labels (``nn.functional.pad(labels,
(0, 1), value=ignore_index)``, transformers#35646, first in the 4.49.0 wheel) instead of copying the
shifted logits (``shift_logits = logits[..., :-1, :].contiguous()``, 4.48.1 ``loss/loss_utils.py`` 38)."""
UPCAST_IN_MODEL_UNTIL = (4, 46, 0)
"""Before this release the causal-LM model upcasts its own logits (``self.lm_head(...).float()``, Llama
4.45.2 line 1214; ``logits = logits.float()``, 4.44.2 line 1209), so its 16-bit logits are not kept."""


def _full_ce_forward(spec: TrainSpec, c: int) -> int:
    """Bytes per vocabulary entry per token at transformers' causal-LM loss, by release (frameworks plain
    and hf-trainer; c: the logits' bytes):

    - from 4.49: the logits (c, unless already fp32), their fp32 copy and log_softmax's fp32 output: c + 8;
    - 4.46 to 4.48: the same plus the shifted fp32 copy ``logits[..., :-1, :].contiguous()``: c + 12;
    - up to 4.45: the model's fp32 logits (its 16-bit ones die at the cast), the shifted copy and
      log_softmax's output: 12.

    The shifted copy (4 of those bytes, ``_shift_copy``) exists only with more than one sequence: the
    slice of a single row drops its last position, which leaves the view contiguous, and
    ``contiguous()`` returns the tensor itself. This function returns the bytes without it.

    Backward is 12 in all: log_softmax's saved output, its incoming gradient and the gradient it makes;
    the shift's ``slice_backward`` (a zero-filled fp32 b x s x V and the 4 V gradient) comes after the
    first two are freed. The shifted tensors have s - 1 positions: planned at s.

    Traced (``runtime/legacy_loss.py``, ``tests/test_versions.py``): Qwen2.5-0.5B LoRA b2 s512 +0.05 %,
    full +0.04 %; at b1 the trace has no shifted copy (the +11 % once seen at b1 s1024 was that copy).
    """
    upcast_in_model = _shift_copy(spec) and spec.transformers_version < UPCAST_IN_MODEL_UNTIL
    return 8 if upcast_in_model or c == 4 else c + 8


def _shift_copy(spec: TrainSpec) -> int:
    """Bytes per vocabulary entry per token of the shifted fp32 logits copy transformers < 4.49 makes
    (frameworks plain and hf-trainer), counted when b > 1; 0 from 4.49."""
    legacy = spec.framework in ("plain", "hf-trainer") and spec.transformers_version < SHIFTED_LABELS_FROM
    return 4 if legacy else 0


def _loss_terms(spec: TrainSpec, c: int, softcap: int) -> dict[str, float | int]:
    """The logits' bytes per loss kernel (``spec.loss_kernel``), for T = b s tokens, vocabulary V,
    logits bytes c (16-bit under autocast, which casts an fp32 lm_head's matmul too).

    - full-ce (transformers' ``ForCausalLMLoss``): the logits (c V), their fp32 copy and the fp32
      ``log_softmax`` output (8 V) in the forward; at the start of backward the saved output, its
      incoming gradient and the gradient of the fp32 logits (12 V).
    - chunked-ce (torchtune's ``CEWithChunkedOutputLoss``, n = ``loss_chunks``): the output
      projection runs per chunk of the sequence and every chunk's logits (c V) stay referenced
      until the loss is taken; each chunk is upcast (4 V / n, transient; none when c = 4) and its
      ``log_softmax`` output kept (4 V over all chunks). Backward takes the chunks one at a time:
      all saved outputs (4 V) plus one chunk's nll gradient and log_softmax gradient (8 V / n).
    - fused-ce (Liger's ``LigerFusedLinearCrossEntropyFunction``, ``ops/fused_linear_cross_entropy.py``):
      no logits tensor. Its forward computes the gradients at once and saves them: the hidden
      state's (c h per token), the fp32 per-token loss (4), and, when lm_head trains, the weight
      gradient (V h, the weight's dtype); one chunk of next_power_of_2(ceil(T / ceil(V / h))) tokens
      of logits (c V each) is alive at a time. Cut Cross-Entropy keeps less (no hidden-state
      gradient in the forward); it is planned as Liger, an upper bound.
    """
    s = spec.model.shape
    V = s.vocab
    if spec.loss_kernel == "litgpt-ce":
        from lora_budget.core.litgpt import loss_terms

        return loss_terms(spec)
    if spec.loss_kernel == "chunked-ce":
        n = spec.loss_chunks
        return dict(
            loss_fwd=(c + 4 + (4 / n if c != 4 else 0)) * V,
            loss_bwd=(4 + 8 / n) * V,
            loss_fixed=0,
            fused_chunk_inc=0,
            fused_chunk_bytes=0,
        )
    if spec.loss_kernel == "fused-ce":
        head = s.vocab * s.hidden * DTYPE_BYTES[spec.dtype] if spec.method == "full" else 0
        return dict(
            loss_fwd=c * s.hidden + 4,
            loss_bwd=c * s.hidden,
            loss_fixed=head,
            fused_chunk_inc=-(-V // s.hidden),
            fused_chunk_bytes=c * V,
        )
    return dict(
        loss_fwd=_full_ce_forward(spec, c) * V + softcap,
        loss_bwd=12 * V + softcap,
        loss_fixed=0,
        fused_chunk_inc=0,
        fused_chunk_bytes=0,
        shift_copy=_shift_copy(spec) * V,
    )


def _autocast_copies(spec: TrainSpec, adapter_bytes: int) -> dict[str, int]:
    """16-bit copies of fp32 weights that ``torch.autocast`` makes for the matmuls.

    Autocast casts an fp32 weight to 16 bits for every linear; the linear's backward needs that
    copy for its input gradient, so autograd keeps it. Casts of leaf tensors that require grad
    (peft's fp32 adapters) are cached for the autocast region: one copy each, alive through the
    forward and the loss; without checkpointing the graph keeps them into backward, with it the
    cache is the last owner and they go when autocast exits, before backward (recomputation casts
    again, one layer at a time). A frozen fp32 lm_head (after ``prepare_model_for_kbit_training``)
    is cast anew, V x h x 2 bytes, and kept until its backward, which runs first.
    """
    if not spec.autocast_on:
        return dict(autocast_fwd=0, autocast_bwd=0)
    s = spec.model.shape
    lowp = 2
    adapters = adapter_bytes * lowp // DTYPE_BYTES[spec.adapter_dtype] if spec.adapter_dtype == "fp32" else 0
    head = s.vocab * s.hidden * lowp if spec.kbit_prepared else 0
    # offloaded, a copy's graph reference is an id, so the cache's is the last (as with checkpointing)
    kept = 0 if spec.grad_ckpt or spec.activation_offload else adapters
    return dict(autocast_fwd=adapters + head, autocast_bwd=head + kept)


def single_peak_model(spec: TrainSpec, overhead_bytes: int = 0) -> PeakModel:
    """The step on one GPU (``core.model.peak_model`` shards it for more)."""
    static = static_memory(spec)
    s = spec.model.shape
    litgpt = spec.framework == "litgpt"  # its LoRA flags are read by core/litgpt.py
    targets = frozenset() if spec.method == "full" or litgpt else frozenset(resolve_targets(s, spec.targets, spec.rank))
    settings = StepSettings(
        compute_bytes=spec.activation_bytes,
        adapter_bytes=DTYPE_BYTES[spec.adapter_dtype],
        base_trainable=spec.method == "full",
        lora_targets=targets,
        rank=spec.rank,
        attn=spec.attn,
        lora_dropout=spec.lora_dropout > 0 and spec.method != "full",
        autocast=spec.autocast_on,
        bnb_input_bytes=spec.compute_bytes if spec.bnb_keeps_input else 0,
        fused_loss=spec.loss_kernel == "fused-ce",
        head_trains=spec.objective == "reward",
        compiled=spec.compile,
    )
    if spec.compile:
        from lora_budget.core.compiled import check

        check(spec)
    if litgpt:  # LitGPT's own block (core/litgpt.py)
        from lora_budget.core.litgpt import activation_model as litgpt_activations

        acts = litgpt_activations(spec, settings, static.dequant_bytes)
    elif s.derived:  # coefficients traced from the model itself (core/derived.py)
        from lora_budget.core.derived import derived_activations

        acts, static = derived_activations(spec, static)
    else:
        acts = _activation_model(s, settings, spec.grad_ckpt, static.dequant_bytes)
    return PeakModel(spec=spec, static=static, acts=acts, overhead_bytes=overhead_bytes)


_activation_model = lru_cache(maxsize=4096)(activation_model)
"""``activation_model`` cached: its arguments are frozen, and optimizers, world sizes and accumulation
share one walk."""


def _offload_plan(spec: TrainSpec, acts: ActivationModel) -> OffloadPlan:
    from lora_budget.core.offload import offload_plan

    return offload_plan(spec, acts)
