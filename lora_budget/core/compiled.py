"""torch.compile: what inductor's partitioner keeps for backward, rule by rule.

With ``compile`` every decoder layer runs as one compiled region (torchtune's ``compile: True``
compiles each ``TransformerSelfAttentionLayer``, ``torchtune/training/_compile.py``). AOTAutograd
traces the region's joint forward + backward graph, applies inductor's decompositions
(``torch/_inductor/decomposition.py``) and common-subexpression elimination (``fx_graph_cse``,
``torch/_functorch/compile_utils.py``, on by default: ``functorch.config.cse``), and
``min_cut_rematerialization_partition`` (``torch/_functorch/partitioners.py``, torch 2.13) chooses
the saved set as a minimum cut: a tensor the backward needs is either saved or recomputed from saved
ones, and only ops in its fusible list (pointwise, reductions, views; ``get_default_op_list``) may be
recomputed. Matmuls and SDPA are "compute intensive" and never recomputed; an op whose output is
less than a quarter of its inputs (a reduction) is not either (``ban_if_reduction``); a tensor a
non-fusible backward op reads is "materialized in backward" and saved (``is_materialized_backwards``).

For a pre-norm RMSNorm / SwiGLU / rotary decoder layer under SDPA that gives, against eager autograd
(``core/activations.py``'s walk), c bytes per activation element:

- **RMSNorm** keeps its c-byte input (the residual stream) and the fp32 ``rsqrt`` (4 bytes per
  token), and recomputes ``x.float()``, ``x * rsqrt``, the cast back and the weight product in
  backward: eager keeps the fp32 copy (4 per element) and, when the norm weight trains, the cast
  product (c) for its gradient. The norm's output is still saved where a matmul's weight gradient
  reads it (full fine-tuning), since a matmul's input is materialized in backward.
- **SwiGLU** keeps ``gate`` and ``up`` (matmul outputs: the cut cannot recompute them) and
  recomputes ``silu(gate)`` (pointwise); eager's ``mul`` also keeps the SiLU output (c per
  intermediate element).
- **One cast per input.** peft casts each adapted linear's input to the adapter dtype
  (``x.to(lora_A.weight.dtype)``, ``peft/tuners/lora/layer.py``); q, k and v (and gate and up) cast
  the same tensor, and CSE leaves one copy, where eager keeps one per adapted linear.
- Everything else is saved as in eager: matmul inputs for weight gradients, SDPA's q, k, v, output
  and fp32 logsumexp, the LoRA ``lora_A`` outputs.

The rules were read off the partitioned graphs and checked by the trace engine running them
(``runtime/compiled.py``); the measured table is ``validation/data/compiled-saved-set.json``
(``scripts/compiled_saved_set.py``). Outside the decoder layers nothing changes (they run eagerly).

Known error: the forward and backward transients are planned as eager's; inductor's fused kernels
allocate fewer intermediates there, so those terms are upper bounds.
"""

from __future__ import annotations

from lora_budget.errors import LoraBudgetError

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from lora_budget.catalog.shape import ModelShape
    from lora_budget.spec import TrainSpec


def check(spec: TrainSpec) -> None:
    """Refuse, in one sentence, a compiled spec whose layer the rules above were not verified for."""
    s: ModelShape = spec.model.shape
    why = ""
    if spec.framework == "litgpt":
        why = "LitGPT's own block"
    elif s.derived:
        why = "a trace-derived model"
    elif s.norm != "rms" or s.norm_scheme != "pre" or s.qk_norm != "none":
        why = f"{s.model_type}'s norms (only pre-norm RMSNorm layers are verified)"
    elif not s.gated_mlp or s.fused_gate_up or s.act != "silu" or s.is_moe:
        why = f"{s.model_type}'s MLP (only dense SwiGLU is verified)"
    elif s.fused_qkv or s.dropout > 0 or s.learned_positions:
        why = f"{s.model_type}'s attention block"
    elif spec.attn == "eager":
        why = "eager attention"
    elif spec.method not in ("full", "lora"):
        why = f"--method {spec.method} (bitsandbytes' 4-bit / 8-bit layers under dynamo are not verified)"
    elif spec.autocast_on:
        why = "autocast (the Trainer's bf16=True; use --no-autocast or --framework torchtune / plain)"
    elif spec.lora_dropout > 0:
        why = "LoRA dropout (a random op the partitioner never recomputes)"
    elif spec.activation_offload or spec.ckpt_offload:
        why = "offloaded activations"
    if why:
        raise LoraBudgetError(f"--compile is planned for dense Llama-style layers in full / LoRA; not for {why}")


def rms_norm(w, st, x, width: int):  # noqa: ANN001, ANN201 (activations' private walk types)
    """RMSNorm under the partitioner: keep the input and the fp32 rsqrt (when the input needs a
    gradient); the normed output is returned for a consumer to keep if its backward reads it."""
    if x.rg:
        w.save(x, w.new("rsqrt", 4, True))
    return w.new("norm_out", st.compute_bytes * width, x.rg or st.base_trainable)


def adapter_input(w, x, adapter_bytes: int, fan_in: int):  # noqa: ANN001, ANN201
    """peft's cast of ``x`` to the adapter dtype: one tensor per input after CSE (a shared key)."""
    from lora_budget.core.activations import _T, Coeff

    return _T(f"lora_in_of_{x.key}", Coeff(adapter_bytes * fan_in), x.rg)
