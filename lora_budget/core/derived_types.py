"""The activation model of a trace-derived model whose decoder layers are of several types.

A coefficients record of several types (``derive/hybrid.py``) holds, per type t, the per-token
lines of what one layer keeps (``layer_t``, or ``checkpoint_t`` under checkpointing), its forward
and backward working sets and the gradients its backward makes; plus ``first_layer``, ``once`` and
``head``. For the model's pattern p_0 .. p_{L-1} (its type per layer, from the architecture record)
they compose exactly where the peak model sums and by the largest candidate where it takes one
moment, without the peak model knowing of types:

- saved bytes: ``layer`` = the mean of layer_{p_i} over i = 1 .. L-1 (the peak model multiplies it
  by L - 1 beside ``first_layer``), ``checkpoint`` = the mean of checkpoint_{p_i} over all L; both
  exact, because a sum of lines is a line.
- forward: type t's working set peaks at its last layer top_t, where the layers above it have kept
  nothing yet: candidate fwd_t - above(top_t), above(i) = what layers i+1 .. L-1 keep. The largest
  candidate at the planned (b, s) is the model's forward transient.
- backward of the top layers: at top_t's backward the layers above have freed what they kept and
  made their gradients: candidate bwd_t - above(top_t) plus the constant (its fixed bytes, its
  gradients made by then, and every gradient of the layers above: G(top_t)). The largest candidate
  at the planned (b, s) goes where the peak model puts a layer's backward working set beside what
  is left of the activations: ``attention_tail`` = above(top_t) (taken from all activations there
  only), ``backward_transient_attention`` = bwd_t, with ``layer_gradients_before_attention`` and
  ``dequant_attn_bytes`` the constants.
- backward of layer 0 (every gradient but its own and the embeddings'): its own type's working
  set. The peak model's layer-0 moment reuses the top moment's line, so ``first_attention_tail``
  (subtracted there only, without checkpointing) takes back the difference of the lines, and
  ``layer_gradients`` (layer 0's gradients, subtracted there only) the difference of the constants.
  Under checkpointing the peak model takes ``attention_tail`` there too, so it is left zero: the
  top moment keeps the few checkpoints above the chosen layer (over-planned by those layer inputs)
  and the layer-0 moment uses the chosen layer's line.

Known error: the choice among candidates is made at the planned (b, s), so the peak there is the
largest candidate's; the fit search (largest batch and sequence) evaluates that choice at other
sizes, where another type's moment may be larger: under full fine-tuning a layer low in the stack
has every gradient above it made (a constant) and fewer activations (per token), so the choice
turns with the token count (Nemotron-H: a Mamba layer's moment at 1,024 tokens, the top MLP
layer's at 8,192). A candidate is one moment per type (its last layer's).
"""

from __future__ import annotations

from typing import Any

from lora_budget.core.activations import ZERO, ActivationModel, Coeff
from lora_budget.records import replace


def _line(pair: list[float]) -> Coeff:
    return Coeff(float(pair[0]), float(pair[1]))


def _add(a: Coeff, b: Coeff, k: float = 1.0) -> Coeff:
    return Coeff(a.lin + k * b.lin, a.quad + k * b.quad)


def compose(
    record: dict[str, Any], pattern: list[str], grad_ckpt: bool, static: Any, at: tuple[int, int]
) -> tuple[ActivationModel, Any]:
    """The ``ActivationModel`` and static memory of the L = ``len(pattern)`` layers, candidates chosen
    at (b, s) = ``at`` (see the module docstring)."""
    b, s = at

    def _at(c: Coeff, fixed: int = 0) -> float:
        return b * s * (c.lin + c.quad * s) + fixed

    types = record["types"]
    L = len(pattern)
    kept = [_line(types[t]["checkpoint" if grad_ckpt else "layer"]) for t in pattern]
    grads = [int(types[t]["layer_gradient_bytes"]) for t in pattern]
    above, made = [ZERO] * L, [0] * L  # what layers i+1 .. L-1 keep, and the gradients they make
    for i in range(L - 2, -1, -1):
        above[i] = _add(above[i + 1], kept[i + 1])
        made[i] = made[i + 1] + grads[i + 1]
    top = {t: i for i, t in enumerate(pattern)}
    first = _line(record["first_layer"])
    upper = range(1, L) if L > 1 else range(L)
    layer = Coeff(
        sum(_line(types[pattern[i]]["layer"]).lin for i in upper) / len(upper),
        sum(_line(types[pattern[i]]["layer"]).quad for i in upper) / len(upper),
    )
    checkpoint = Coeff(sum(c.lin for c in kept) / L, sum(c.quad for c in kept) / L) if grad_ckpt else ZERO
    batched = sum(float(types[pattern[i]].get("batched_extra", 0.0)) for i in upper) / len(upper)

    forward = []
    for t, i in top.items():
        line = _add(_line(types[t]["forward_transient"]), above[i], -1)
        forward.append((_at(line, types[t]["forward_fixed_bytes"]), line, int(types[t]["forward_fixed_bytes"])))
    _, fwd_line, fwd_fixed = max(forward, key=lambda c: c[0])
    if _at(fwd_line) < 0:  # the forward holds less than all activations then: the loss phase is larger
        fwd_line = ZERO

    def backward(t: str, i: int) -> tuple[float, Coeff, Coeff, int, int]:
        r = types[t]
        line = _line(r["backward_transient"])
        early = int(r["backward_gradient_bytes"]) + made[i]
        value = _at(_add(line, above[i], -1), early + int(r["backward_fixed_bytes"]))
        return value, line, above[i], early, int(r["backward_fixed_bytes"])

    _, bwd_line, freed, early, bwd_fixed = max((backward(t, i) for t, i in top.items()), key=lambda c: c[0])
    zero = types[pattern[0]]
    zero_line = _line(zero["backward_transient"])
    zero_const = int(zero["backward_gradient_bytes"]) + int(zero["backward_fixed_bytes"])
    # the layer-0 moment: acts_first - first_attention_tail + grads + line + constants (core/peak.py)
    tail = _add(bwd_line, zero_line, -1)
    layer_gradients = int(zero["layer_gradient_bytes"]) + (early + bwd_fixed) - zero_const
    # the moments the peak model adds without the gradients made by then: the top layer's own line
    # beside every activation, layer 0's beside its own; the lower of the two serves both
    lower = min((_line(types[pattern[-1]]["backward_transient"]), zero_line), key=_at)
    acts = ActivationModel(
        layer=layer,
        first_layer=first,
        once=_line(record["once"]),
        checkpoint=checkpoint,
        head=_line(record["head"]),
        forward_transient=fwd_line,
        forward_transient_kernel=ZERO,
        backward_transient=lower,
        layer_attention=layer,
        first_layer_attention=first,
        backward_transient_attention=bwd_line,
        # under checkpointing the peak model takes attention_tail at layer 0's moment too, where
        # only one layer's checkpoint is left: there the few checkpoints above stay counted (over)
        attention_tail=ZERO if grad_ckpt else freed,
        first_attention_tail=tail,
        batched_extra=Coeff(batched),
        backward_transient_dequant=ZERO,
        dequant_bytes=fwd_fixed,
    )
    static = replace(
        static,
        layer_gradients=layer_gradients,
        layer_gradients_before_attention=early,
        dequant_attn_bytes=bwd_fixed,
    )
    return acts, static
