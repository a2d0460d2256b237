"""Gradient checkpointing with the checkpoints in host memory (``--ckpt-offload``).

Unsloth's ``Unsloth_Offloaded_Gradient_Checkpointer`` (``unsloth_zoo/gradient_checkpointing.py``)
and axolotl's ``gradient_checkpointing: offload`` (``utils/gradient_checkpointing/``, which wraps
the same function around each decoder layer) replace the checkpoint function of every decoder
layer: the forward copies the layer's input hidden state to the CPU (``.to("cpu", non_blocking=True)``),
runs the layer under ``no_grad`` and keeps only that host copy; the backward copies it back to the
GPU, recomputes the layer with grad and back-propagates through it. So the device holds no
per-layer checkpoints: only the layer being recomputed and its input, brought back.

``install`` puts a function with those semantics (written here from the description above) in
transformers' checkpointing hook (``_gradient_checkpointing_func`` of each
``GradientCheckpointingLayer``). ``to_host`` / ``to_device`` move a tensor; the trace passes its
tracker's (a copy taken off the fake device's count), a GPU run the real copies.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any


def install(model: Any, to_host: Callable[[Any], Any], to_device: Callable[[Any], Any]) -> None:
    """Swap the checkpoint function of every checkpointed decoder layer for the offloaded one."""
    import torch

    class OffloadedCheckpoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, run: Any, hidden: Any, *args: Any) -> Any:
            ctx.host = to_host(hidden)
            ctx.run, ctx.args = run, args
            with torch.no_grad():
                return run(hidden, *args)

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            hidden = to_device(ctx.host).detach().requires_grad_(True)
            ctx.host = None
            with torch.enable_grad():
                out = ctx.run(hidden, *ctx.args)
            outs = out if isinstance(out, tuple) else (out,)
            pairs = [(o, g) for o, g in zip(outs, grads, strict=False) if o.requires_grad and g is not None]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            return (None, hidden.grad, *([None] * len(ctx.args)))

    def checkpoint(run: Any, hidden: Any, *args: Any) -> Any:
        return OffloadedCheckpoint.apply(run, hidden, *args)

    found = False
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = partial(checkpoint)
            found = True
    if not found:
        from lora_budget.errors import LoraBudgetError

        raise LoraBudgetError("--ckpt-offload needs transformers' per-layer checkpointing, which this model lacks")


def fake_movers(tracker: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Host and device copies on the trace's one fake device: a copy, taken off (or kept on) the count."""

    def to_host(x: Any) -> Any:
        copy = x.detach().clone()
        tracker.to_host(copy)
        return copy

    def to_device(x: Any) -> Any:
        return x.clone()

    return to_host, to_device
