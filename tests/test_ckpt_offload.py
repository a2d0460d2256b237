"""Offloaded gradient checkpointing (``--ckpt-offload``): checkpoints in host memory.

The trace runs the offloaded checkpoint function (``runtime/offload.py``) in transformers' per-layer
checkpointing hook, with each host copy taken off the fake device's count (``Tracker.to_host``).
"""

from __future__ import annotations

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.core.model import estimate, peak_model
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec
from tests.tiny_models import truncated


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_plan_matches_trace(method):
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from lora_budget.trace.engine import trace

    spec = TrainSpec(
        model=truncated("Qwen2.5-0.5B", 4), method=method, batch_size=2, seq_len=256, grad_ckpt=True, ckpt_offload=True
    )
    assert abs(estimate(spec).peak_bytes / trace(spec).breakdown.peak_bytes - 1) <= 0.005


def test_offload_removes_the_checkpoints_by_hand():
    """Llama-3.1-8B, b = 1, s = 4096: a checkpoint is one bf16 hidden state, 4096 x 4096 x 2 bytes.
    The loss phase keeps all 32 on the device without offloading, none with it; the last layer's
    backward keeps 32 (its own among them) without, one (brought back) with."""
    ref = resolve_model("8b")
    on, off = (
        peak_model(TrainSpec(model=ref, seq_len=4096, grad_ckpt=True, ckpt_offload=flag))._phases(1, 4096)
        for flag in (False, True)
    )
    ckpt = 4096 * 4096 * 2
    loss_on, loss_off = on[1], off[1]
    assert loss_on[0] == loss_off[0] == "loss"
    assert loss_on[2] - loss_off[2] == 32 * ckpt
    assert on[3][2] - off[3][2] == 31 * ckpt


def test_offload_needs_checkpointing():
    with pytest.raises(LoraBudgetError, match="needs --grad-ckpt"):
        TrainSpec(model=resolve_model("8b"), ckpt_offload=True)
