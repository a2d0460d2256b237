"""Derive the planner's inputs for any transformers causal LM from a truncated traced step.

``derive_coefficients(spec)`` traces a 2-layer copy of ``spec``'s model (real width, fake tensors)
at the points of ``fit.points``, fits each measured term (``measure.py``) and stores the result in
the user cache (``core/derived.py`` reads it). Imports torch; the planner imports this package only
when a record is missing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lora_budget import records
from lora_budget.core.derived import (
    SCHEMA,
    arch_key,
    cache_dir,
    depth_key,
    describe,
    settings,
    settings_key,
)
from lora_budget.derive import fit
from lora_budget.derive.arch import PROBE_LAYERS
from lora_budget.derive.store import save_coefficients, versions
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import ModelRef, TrainSpec

log = logging.getLogger(__name__)

REFERENCE: fit.Point = (4, 2048)
"""(b, s) at which the largest forward and backward moments are chosen (see ``_moment``)."""


def truncated_config(raw: dict[str, Any], layers: int = PROBE_LAYERS) -> dict[str, Any]:
    """``raw`` with its first ``layers`` decoder layers (per-layer lists and pattern strings cut to
    match); a multimodal config gives its text tower's, which is what the planner plans."""
    from lora_budget.derive.layers import per_layer_values

    if isinstance(raw.get("text_config"), dict) and "model_type" in raw["text_config"]:
        raw = raw["text_config"]
    key = depth_key(raw)
    depth = raw[key]
    out = dict(raw)
    for name, value in per_layer_values(raw, depth).items():
        out[name] = value[:layers]
    out[key] = layers
    return out


def truncated_spec(spec: TrainSpec, layers: int = PROBE_LAYERS) -> TrainSpec:
    """``spec`` on a ``layers``-layer copy of its model, one GPU, plain SGD (the optimizer changes no
    activation; its state and step are planned from the inventory)."""
    from lora_budget.catalog.shape import shape_from_config

    raw = truncated_config(dict(spec.model.config), layers)
    ref = ModelRef(
        name=f"{spec.model.name} ({layers} layers)",
        hf_id=spec.model.hf_id,
        source=spec.model.source,
        shape=shape_from_config(raw, where=spec.model.name),
        config=raw,
    )
    return records.replace(
        spec, model=ref, gpus=1, strategy="ddp", offload="none", grad_accum=1, optimizer="sgd", warnings=()
    )


def _moment(
    at: list[fit.Point], series: list[tuple[int, ...]], what: str, allow_unaligned: bool = False
) -> tuple[tuple[float, ...], int]:
    """The event whose fitted bytes are largest at ``REFERENCE``: (its coefficients, its index).

    The peak model holds one line per transient, so one moment of the layer stands for all; at a
    (b, s) far from the reference another moment may be larger (known error, small beside the
    activations: the candidates are the same layer's working sets).
    """
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        if not allow_unaligned:
            raise LoraBudgetError(
                f"the layer's {what} runs a different number of ops at different sizes; not derivable"
            )
        # a loop over sequence chunks (linear attention's chunked scan): events do not pair up
        # across sizes; the largest event of each size is fitted (index -1), checked by the fifth point
        return fit.fit(at, [max(s) for s in series]), -1
    best, best_at = None, -1
    for j in range(lengths.pop()):
        coeffs = fit.fit(at, [s[j] for s in series])
        value = fit.evaluate(coeffs, *REFERENCE)
        if best is None or value > fit.evaluate(best, *REFERENCE):
            best, best_at = coeffs, j
    return best, best_at


def _single_sequence_extra(coeffs: list[float], measured: list[int], probes: list[Any]) -> float | None:
    """Bytes per token a layer keeps at b = 1 beyond the fit made at b >= 2 (0 for most models).

    Some modelling code saves differently for one sequence: GPT-NeoX (Pythia) keeps 4 h bytes per
    token more per layer at b = 1 than the b >= 2 fit says (the plan was 1.7 % low against a b = 1
    trace before this; which op keeps them was not pinned down, the bytes are measured directly).
    Measured at two sequence lengths; None when the difference is not the same per token at both
    (then no correction is made and the record says so)."""
    lin, quad = coeffs
    per_token = [(m - p.seq_len * (lin + quad * p.seq_len)) / p.seq_len for m, p in zip(measured, probes, strict=True)]
    if abs(per_token[0] - per_token[1]) > 1.0:
        return None
    return float(round(per_token[0]))


def _check_autocast(spec: TrainSpec) -> None:
    """Refuse autocast where CPU autocast on fake tensors would not be CUDA's, as the trace engine
    does: CPU autocast keeps layer_norm and pow in 16 bits where CUDA's runs them in fp32, so a
    model with a LayerNorm or the tanh GELU (``gelu_new``, which calls pow) is derived without it."""
    from lora_budget.derive.arch import build_meta
    from lora_budget.runtime.build import cpu_autocast_differs

    raw = dict(spec.model.config)
    if cpu_autocast_differs(build_meta(truncated_config(raw, PROBE_LAYERS)), raw):
        raise LoraBudgetError(
            f"{spec.model.name}: autocast on fake CPU tensors follows CPU autocast, which keeps layer_norm and pow "
            "in 16 bits where CUDA's runs them in fp32; this LayerNorm / tanh-GELU model is derived without "
            "autocast only (--framework plain or --no-autocast)"
        )


def derive_coefficients(spec: TrainSpec, *, save: bool = True) -> dict[str, Any]:
    """Trace, fit and (unless ``save`` is off) cache the coefficients record of ``spec``."""
    from lora_budget.derive.measure import probe

    values = settings(spec)
    if spec.loss_kernel == "fused-ce":
        raise LoraBudgetError("fused-ce runs Triton kernels the trace cannot run; no derived coefficients for it")
    if values.get("objective"):
        raise LoraBudgetError(f"derived coefficients cover the sft objective only, not {values['objective']}")
    if spec.autocast_on:
        _check_autocast(spec)
    started = time.perf_counter()
    from lora_budget.core.derived import architecture_at, layer_pattern

    arch = architecture_at(spec.model.shape)
    if arch.get("types"):  # layers of several types (derive/hybrid.py)
        from lora_budget.derive.hybrid import derive_types

        record = {"schema": SCHEMA, "settings": values}
        record.update(derive_types(spec, layer_pattern(arch, spec.model.shape.layers)))
        record.update(versions=versions(), wall_s=round(time.perf_counter() - started, 2))
        return _finish(spec, values, record, save)
    small = truncated_spec(spec)
    at, check = fit.points(spec.model.shape.max_positions)
    probes = [probe(records.replace(small, batch_size=b, seq_len=s)) for b, s in (*at, check)]
    grid = [*at, check]

    def term(name: str, get: Any) -> tuple[list[float], float, float]:
        measured = [get(p) for p in probes]
        coeffs = fit.fit(grid, measured)
        residual = measured[4] - fit.evaluate(coeffs, *check)
        return fit.per_token(coeffs), coeffs[0], residual

    terms = {
        "first_layer": term("first_layer", lambda p: p.own[0]),
        "own": term("layer", lambda p: p.own[PROBE_LAYERS - 1]),
        "once": term("once", lambda p: p.total - sum(p.own)),
        "head": term("head", lambda p: p.head),
    }
    fwd, fwd_j = _moment(grid, [p.forward[-1] for p in probes], "forward")
    bwd, bwd_j = _moment(grid, [p.backward[-1] for p in probes], "backward")
    single = [probe(records.replace(small, batch_size=1, seq_len=s)) for s in (at[2][1], check[1])]
    extra = {
        "first_layer": _single_sequence_extra(terms["first_layer"][0], [p.own[0] for p in single], single),
        "layer": _single_sequence_extra(terms["own"][0], [p.own[PROBE_LAYERS - 1] for p in single], single),
    }
    own, first = list(terms["own"][0]), list(terms["first_layer"][0])
    batched = 0.0
    if not spec.grad_ckpt and extra["layer"] is not None and extra["first_layer"] is not None:
        # the peak model holds the b = 1 layer and adds ``batched_extra`` per token above one sequence
        own[0] += extra["layer"]
        first[0] += extra["first_layer"]
        batched = -extra["layer"]
    record = {
        "schema": SCHEMA,
        "settings": values,
        "layer": [0.0, 0.0] if spec.grad_ckpt else own,
        "first_layer": first,
        "batched_extra": batched,
        "single_sequence_extra": extra,
        "checkpoint": terms["own"][0] if spec.grad_ckpt else [0.0, 0.0],
        "once": terms["once"][0],
        "head": terms["head"][0],
        "forward_transient": fit.per_token(fwd),
        "forward_fixed_bytes": max(0, round(fwd[0])),
        "backward_transient": fit.per_token(bwd),
        "backward_gradient_bytes": probes[0].grads[-1][bwd_j],
        "backward_fixed_bytes": max(0, round(bwd[0])),
        "fixed_bytes": {name: round(t[1]) for name, t in terms.items()},
        "check_residual_bytes": {name: round(t[2]) for name, t in terms.items()},
        "moments": {"forward": fwd_j, "backward": bwd_j},
        "points": [list(p) for p in grid],
        "single_sequence_points": [[1, p.seq_len] for p in single],
        "layers_traced": PROBE_LAYERS,
        "versions": versions(),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    return _finish(spec, values, record, save)


def _finish(spec: TrainSpec, values: dict[str, Any], record: dict[str, Any], save: bool) -> dict[str, Any]:
    if save:
        key = arch_key(spec.model.shape.arch_config)
        save_coefficients(key, settings_key(values), record)
        log.warning(
            "note: derived %s coefficients (%s) from a %d-layer trace in %.0f s; cached in %s",
            spec.model.shape.model_type,
            describe(values),
            record["layers_traced"],
            record["wall_s"],
            cache_dir(),
        )
    return record
