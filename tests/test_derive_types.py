"""Trace-derived models whose decoder layers are of several types (sliding / full attention, linear /
full attention, convolution / attention, Mamba / attention / MLP, dense / MoE).

The independent checks: (1) the truncated copy's depth and the composition over a pattern follow
from hand-worked patterns and numbers (written out below); (2) the parameter inventory composed
from one layer per type equals what transformers instantiates at the model's full depth; (3) the
plan from per-type coefficients traced on a 3-layer copy of LFM2 equals a full trace of an 8-layer
copy within the issue's 1 %. The slow set over five architectures is in tests/test_derive_accuracy.py.
"""

from __future__ import annotations

import json

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.core import derived
from lora_budget.core.activations import ZERO, Coeff
from lora_budget.core.derived_types import compose
from lora_budget.core.static import StaticMemory
from lora_budget.derive.layers import prefix_depth

PLAIN = "plain"


@pytest.mark.parametrize(
    "pattern, depth",
    [
        (["s", "f"] * 12, 3),  # gpt-oss: layer 0 stays, layer 1 is full, layer 2 the next sliding
        (["lin", "lin", "lin", "full"] * 16, 4),  # Qwen3.5: full attention every 4th layer
        (["dense"] + ["moe"] * 26, 2),  # DeepSeek-V2-Lite: the dense type only at layer 0 is read there
        (["x"] * 32, 2),  # one type: the 2-layer copy of the alike case
        (["s"] * 5 + ["f"], 6),  # Gemma 4: five sliding, then full
    ],
)
def test_truncated_depth_holds_every_type_above_layer_0(pattern, depth):
    assert prefix_depth(pattern) == depth


def _static() -> StaticMemory:
    return StaticMemory(
        weights=0, quant_state=0, adapter=0, master_weights=0, gradients=0, optimizer=0, optimizer_pageable=0,
        optimizer_step_temp=0, trainable_params=0, head_gradients=0, embedding_gradients=0, layer_gradients=0,
        layer_gradients_before_attention=0, embedding_grad_temp=0, dequant_bytes=0, dequant_attn_bytes=0,
    )  # fmt: skip


def _type(layer, fwd, bwd, moment_grads, layer_grads):
    return {
        "layer": layer, "checkpoint": [0.0, 0.0], "forward_transient": fwd, "forward_fixed_bytes": 0,
        "backward_transient": bwd, "backward_fixed_bytes": 0, "backward_gradient_bytes": moment_grads,
        "layer_gradient_bytes": layer_grads,
    }  # fmt: skip


def test_composition_over_a_pattern():
    """Pattern A B A B (L = 4), no checkpointing, worked by hand at b = 4, s = 2048 (T = 8192):

    - saved: first (80, 1) + B + A + B = (280, 2) per token; ``layer`` is (B + A + B) / 3 = (200/3, 1/3).
    - forward: A's last layer is 2, below one B layer (50 per token): candidate 260 - 50 = 210; B's is
      layer 3, nothing above: 200. A's wins: (210, 0).
    - backward: A at layer 2: 300 - 50 = 250 per token, plus its 1,000 gradient bytes by then and B's
      2,000 above (3,000); B at layer 3: 100 per token + 500. A's wins: its line (300, 0) beside all
      activations less layer 3's (``attention_tail`` (50, 0)), constant 3,000.
    - layer 0 is A: its own line 300, so ``first_attention_tail`` = 300 - 300 = 0 per token; its
      gradients 4,000, and the constants differ by 3,000 - 1,000: ``layer_gradients`` = 6,000.
    - the moments without gradients: the lower of the top layer's (B, 100) and layer 0's (A, 300).
    """
    record = {
        "types": {
            "A": _type([100.0, 1.0], [260.0, 0.0], [300.0, 0.0], 1000, 4000),
            "B": _type([50.0, 0.0], [200.0, 0.0], [100.0, 0.0], 500, 2000),
        },
        "first_layer": [80.0, 1.0],
        "once": [10.0, 0.0],
        "head": [5.0, 0.0],
    }
    acts, static = compose(record, ["A", "B", "A", "B"], False, _static(), (4, 2048))
    assert acts.first_layer.lin + 3 * acts.layer.lin == pytest.approx(280.0)
    assert acts.first_layer.quad + 3 * acts.layer.quad == pytest.approx(2.0)
    assert acts.forward_transient == Coeff(210.0, 0.0)
    assert acts.backward_transient_attention == Coeff(300.0, 0.0) and acts.attention_tail == Coeff(50.0, 0.0)
    assert static.layer_gradients_before_attention == 3000 and static.dequant_attn_bytes == 0
    assert acts.first_attention_tail == ZERO
    assert static.layer_gradients == 6000
    assert acts.backward_transient == Coeff(100.0, 0.0)


pytest.importorskip("peft")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def cache(coefficient_cache):
    """Every derivation of this module writes to a fresh cache folder (conftest's)."""
    return coefficient_cache


@pytest.mark.parametrize(
    "name, types",
    [("Qwen3.5-27B", 2), ("Nemotron-H-56B", 3), ("DeepSeek-V3", 2), ("Gemma-4-31B", 2), ("gpt-oss-20b", 2)],
)
def test_inventory_of_several_types_is_what_transformers_instantiates(cache, name, types):
    """One layer per type times its layer count, plus the rest: equal to ``sum(p.numel())`` of the
    full-depth model transformers builds on meta (catalog config.json values)."""
    from lora_budget.core.params import param_count
    from lora_budget.derive.arch import build_meta

    shape = resolve_model(name).shape
    arch = json.loads(shape.arch_config)
    model = build_meta(derived.config_at_depth(arch, shape.layers))
    assert param_count(shape) == sum(p.numel() for p in model.parameters())
    record = derived.architecture_at(shape)
    assert len(record["types"]) == types
    assert len(derived.layer_pattern(record, shape.layers)) == shape.layers


def test_plan_from_type_coefficients_matches_a_deeper_trace(cache):
    """LFM2-350M cut to 8 layers (conv conv attn conv conv attn conv conv, real width): its
    coefficients come from a 3-layer copy (conv conv attn); the plan is within 1 % of the 8-layer
    trace, and the plan's notes name the two types."""
    from lora_budget.catalog.shape import shape_from_config
    from lora_budget.core.model import estimate
    from lora_budget.derive import truncated_config
    from lora_budget.spec import ModelRef, TrainSpec
    from lora_budget.trace.engine import trace

    raw = truncated_config(dict(resolve_model("LFM2-350M").config), 8)
    ref = ModelRef(name="LFM2 (8)", hf_id="", source="test", shape=shape_from_config(raw), config=raw)
    spec = TrainSpec(framework=PLAIN, model=ref, method="lora", batch_size=2, seq_len=512)
    planned = estimate(spec).peak_bytes
    record = derived.coefficients_record(spec)
    assert record["layers_traced"] == 3 and len(record["types"]) == 2
    assert abs(planned / trace(spec).breakdown.peak_bytes - 1) <= 0.01
    notes = " ".join(spec.model.shape.notes)
    assert "2 types" in notes and "Lfm2Attention" in notes


@pytest.mark.slow
def test_a_type_that_keeps_different_bytes_is_refused(cache, monkeypatch):
    """gpt-oss cut to 4 layers (sliding full sliding full), traced whole: layers 1 and 3 are both full
    attention; made to keep 512 bytes apart, one line cannot stand for both, so it is refused."""
    import dataclasses

    from lora_budget.catalog.shape import shape_from_config
    from lora_budget.derive import hybrid, layers, measure, truncated_config
    from lora_budget.errors import LoraBudgetError
    from lora_budget.spec import ModelRef, TrainSpec

    raw = truncated_config(dict(resolve_model("gpt-oss-20b").config), 4)
    ref = ModelRef(name="gpt-oss (4)", hf_id="", source="test", shape=shape_from_config(raw), config=raw)
    spec = TrainSpec(framework=PLAIN, model=ref, method="full", attn="eager", batch_size=2, seq_len=256)
    real = measure.probe

    def clash(s):
        p = real(s)
        own = list(p.own)
        own[3] += 512
        return dataclasses.replace(p, own=tuple(own))

    monkeypatch.setattr(layers, "prefix_depth", lambda types: 4)
    monkeypatch.setattr(measure, "probe", clash)
    pattern = derived.layer_pattern(derived.architecture_at(ref.shape), 4)
    with pytest.raises(LoraBudgetError, match=r"layers \[1, 3\] are of one type but keep different bytes"):
        hybrid.derive_types(spec, pattern)
