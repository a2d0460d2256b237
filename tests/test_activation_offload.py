"""Activation offloading (``--activation-offload``): TRL's offloading rules, traced.

``runtime/offload.ActivationOffload`` applies the rules of TRL v1.9.0's ``OffloadActivations``
(saved tensors of 1 KiB or more to the host, parameters, tensors saved in the output head and a
storage still stashed kept, the last five offloaded device copies stashed, backward bringing
tensors back node by node); the trace runs it with only the layout going to the host. The planner
does not model it yet and says so.
"""

from __future__ import annotations

import dataclasses

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.core.model import estimate
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec
from tests.tiny_models import truncated


def test_pack_rules():
    torch = pytest.importorskip("torch")
    from lora_budget.runtime.offload import ActivationOffload, fake_movers

    head = torch.nn.Linear(2, 2)
    off = ActivationOffload(head, *fake_movers(), is_param=lambda t: isinstance(t, torch.nn.Parameter))
    small, big = torch.zeros(255), torch.zeros(256)  # 1,020 and 1,024 bytes of fp32
    assert off.pack(small)[0] == "kept"
    assert off.pack(head.weight)[0] == "kept"
    packed = off.pack(big)
    assert packed[0] == "host" and packed[2] == ((256,), (1,), torch.float32)
    assert off.pack(big[:128])[0] == "kept"  # its storage is still stashed: a second device reference
    others = [torch.zeros(256) for _ in range(5)]
    for t in others:
        off.pack(t)
    assert packed[1] not in off.stash  # five offloads later its device copy is released
    assert off.unpack(packed).shape == (256,)  # brought back: a new tensor of its layout


def test_trace_offloads_the_layers_activations():
    """Four layers of Qwen2.5-0.5B (LoRA, b 2 x 256): what the forward leaves on the device for
    backward falls from every layer's saved tensors to the few the rules keep."""
    pytest.importorskip("peft")
    from lora_budget.trace.engine import trace

    spec = TrainSpec(model=truncated("Qwen2.5-0.5B", 4), method="lora", batch_size=2, seq_len=256, framework="plain")
    kept = trace(dataclasses.replace(spec, activation_offload=True)).breakdown.activations
    assert kept < 0.15 * trace(spec).breakdown.activations


def test_plan_says_it_does_not_model_it():
    with pytest.raises(LoraBudgetError, match="traced .* not planned yet"):
        estimate(TrainSpec(model=resolve_model("1b"), activation_offload=True))
