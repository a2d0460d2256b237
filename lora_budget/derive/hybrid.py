"""Coefficients of a model whose decoder layers are of several types, from one truncated copy.

The copy keeps the model's first n layers, n the fewest that hold every type at an index >= 1
(``layers.prefix_depth``: gpt-oss 3, Qwen3.5 4, LFM2 3, Nemotron-H 8); its layers must be the
model's first n by type (checked on the signatures, else refused). Every layer of the copy is read
on its own (``measure.py``), so one traced step per (b, s) point gives, for each type t, the lines
the planner needs:

- ``layer`` / ``checkpoint``: what one layer of type t keeps for backward (its last instance in the
  copy; every other instance above layer 0 must keep the same bytes at every point, else refused);
- ``forward_transient``: the largest working set of its forward, relative to what is alive when it
  runs (the layers above it not yet made);
- ``backward_transient`` with the gradients made by that moment and its fixed bytes, and
  ``layer_gradient_bytes``: every gradient its backward makes;
- ``first_layer`` (layer 0, whatever its type), ``once`` and ``head`` as for one type.

Each is fitted as ``C + a s + T (lin + quad s)`` from four points and checked at a fifth, as in
``fit.py``. ``core/derived_types.py`` composes them for the model's own pattern of L layers. Where a
layer loops over sequence chunks (linear attention's chunked scan) its events do not pair up across
sizes and the largest event of each point is fitted; the fifth point's residual is stored
(``moment_check_residual_bytes``).
"""

from __future__ import annotations

from typing import Any

from lora_budget import records
from lora_budget.derive import fit
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec


def points(max_positions: int, window: int) -> tuple[tuple[fit.Point, ...], fit.Point]:
    """``fit.points``, with every sequence at least the sliding window when one is set and fits:
    transformers materializes a sliding layer's mask only from the window on, so the points must
    not straddle it (the plan then holds for s >= window, where fine-tuning runs)."""
    at, check = fit.points(max_positions)
    unit = at[0][1]
    if window and unit < window and 3 * window <= max_positions:
        unit = -(-window // 8) * 8
        return ((2, unit), (4, unit), (2, 2 * unit), (4, 2 * unit)), (2, 3 * unit)
    return at, check


def derive_types(spec: TrainSpec, pattern: list[str]) -> dict[str, Any]:
    """The coefficients record body of ``spec`` (its layers of several types, ``pattern`` at its depth)."""
    from lora_budget.core.derived import architecture_at, layer_pattern
    from lora_budget.derive import REFERENCE, _moment, _single_sequence_extra, truncated_spec
    from lora_budget.derive.layers import prefix_depth
    from lora_budget.derive.measure import probe

    n = prefix_depth(pattern)
    small = truncated_spec(spec, n)
    small_arch = architecture_at(small.model.shape)
    small_pattern = layer_pattern(small_arch, n) if small_arch.get("types") else []
    if small_pattern != pattern[:n]:
        raise LoraBudgetError(
            f"{spec.model.name}: a copy cut to its first {n} layers does not build the model's first {n} layers "
            "(the config sets layer types by a rule the cut changes); not derivable"
        )
    window = small.model.config.get("sliding_window")
    at, check = points(spec.model.shape.max_positions, window if isinstance(window, int) else 0)
    grid = [*at, check]
    probes = [probe(records.replace(small, batch_size=b, seq_len=s)) for b, s in grid]
    single = [probe(records.replace(small, batch_size=1, seq_len=s)) for s in (at[2][1], check[1])]
    residuals: dict[str, int] = {}
    fixed: dict[str, int] = {}

    def term(name: str, measured: list[int]) -> list[float]:
        coeffs = fit.fit(grid, measured)
        residuals[name] = round(measured[4] - fit.evaluate(coeffs, *check))
        fixed[name] = round(coeffs[0])
        return fit.per_token(coeffs)

    moment_residuals: dict[str, int] = {}

    def moment(name: str, series: list[tuple[int, ...]]) -> tuple[tuple[float, ...], int]:
        coeffs, j = _moment(grid, series, name, allow_unaligned=True)
        measured = max(series[4]) if j < 0 else series[4][j]
        moment_residuals[name] = round(measured - fit.evaluate(coeffs, *check))
        return coeffs, j

    ckpt = spec.grad_ckpt
    first = term("first_layer", [p.own[0] for p in probes])
    first_extra = _single_sequence_extra(first, [p.own[0] for p in single], single)
    types: dict[str, Any] = {}
    for t in dict.fromkeys(pattern):
        ks = [k for k in range(1, n) if small_pattern[k] == t] or [0]
        for p in probes:
            if len({p.own[k] for k in ks}) > 1:
                raise LoraBudgetError(
                    f"{spec.model.name}: layers {ks} are of one type but keep different bytes "
                    f"({sorted({p.own[k] for k in ks})} at b={p.batch_size}, s={p.seq_len}); not derivable"
                )
        k = ks[-1]
        own = term(f"layer {k}", [p.own[k] for p in probes])
        extra = _single_sequence_extra(own, [p.own[k] for p in single], single)
        fwd, fwd_j = moment(f"forward {k}", [p.forward[k] for p in probes])
        bwd, bwd_j = moment(f"backward {k}", [p.backward[k] for p in probes])
        if bwd_j < 0:  # the largest moment of the first point: its gradients made by then
            series = probes[0].backward[k]
            bwd_j = max(range(len(series)), key=series.__getitem__)
        types[t] = {
            "measured_on_layer": k,
            "layer": [0.0, 0.0] if ckpt else own,
            "checkpoint": own if ckpt else [0.0, 0.0],
            "single_sequence_extra": extra,
            "forward_transient": fit.per_token(fwd),
            "forward_fixed_bytes": max(0, round(fwd[0])),
            "backward_transient": fit.per_token(bwd),
            "backward_fixed_bytes": max(0, round(bwd[0])),
            "backward_gradient_bytes": probes[0].grads[k][bwd_j] if probes[0].grads[k] else 0,
            "layer_gradient_bytes": probes[0].layer_grads[k],
        }
    extras = [types[t]["single_sequence_extra"] for t in types]
    if not ckpt and first_extra is not None and None not in extras:
        # the b = 1 saved bytes per type; ``batched_extra`` (per layer, composed) takes them back above
        first[0] += first_extra
        for record in types.values():
            record["layer"][0] += record["single_sequence_extra"]
            record["batched_extra"] = -record["single_sequence_extra"]
    return {
        "types": types,
        "first_layer": first,
        "first_single_sequence_extra": first_extra,
        "once": term("once", [p.total - sum(p.own) for p in probes]),
        "head": term("head", [p.head for p in probes]),
        "fixed_bytes": fixed,
        "check_residual_bytes": residuals,
        "moment_check_residual_bytes": moment_residuals,
        "points": [list(p) for p in grid],
        "single_sequence_points": [[1, p.seq_len] for p in single],
        "layers_traced": n,
        "traced_pattern": small_pattern,
        "reference_point": list(REFERENCE),
    }
