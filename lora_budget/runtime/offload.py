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
``GradientCheckpointingLayer``). ``to_host`` / ``to_device`` move a tensor; the trace passes
``fake_movers`` (only the layout goes to the host), a GPU run the real copies.
"""

from __future__ import annotations

from collections.abc import Callable
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
            module._gradient_checkpointing_func = checkpoint
            found = True
    if not found:
        from lora_budget.errors import LoraBudgetError

        raise LoraBudgetError("--ckpt-offload needs transformers' per-layer checkpointing, which this model lacks")


def fake_movers() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Host and device copies for the trace, whose fake tensors hold no values: the host copy is just
    the tensor's layout (host memory is not the device's), and bringing it back allocates a new
    device tensor of that layout, as the copy to the GPU does."""

    def to_host(x: Any) -> Any:
        return (tuple(x.size()), tuple(x.stride()), x.dtype)

    def to_device(layout: Any) -> Any:
        import torch

        size, stride, dtype = layout
        return torch.empty_strided(size, stride, dtype=dtype)

    return to_host, to_device


MIN_OFFLOAD_BYTES = 1024
"""``OffloadActivations(min_offload_size=1024)``: smaller saved tensors stay on the device."""
FWD_STASH = 5
"""``max_fwd_stash_size=5``: the device copies of the last five offloaded tensors stay alive until
their copy to the host is known to be done (``use_streams=True``, the default)."""


class ActivationOffload:
    """Saved-tensor hooks with the rules of TRL's activation offloading (``activation_offloading=True``,
    ``trl/models/activation_offloading.py`` v1.9.0, from torchtune's ``OffloadActivations``), written
    here from those rules: every tensor autograd saves goes to host memory, except tensors under
    1,024 bytes, parameters and buffers, a storage already offloaded while its device copy is still
    stashed (kept on the device as a second reference), and anything saved inside the output head's
    forward (TRL's hooks on lm_head switch offloading off there). The device copies of the last five
    offloaded tensors stay alive (the forward stash). Backward brings a tensor back when its node
    runs, and frees the previous node's tensors when the next node starts.

    ``to_host`` / ``to_device`` as for ``install``; ``is_param(t)`` says whether a tensor is a model
    parameter or buffer (the trace: a block registered before the step).
    """

    def __init__(self, head: Any, to_host: Callable[[Any], Any], to_device: Callable[[Any], Any], is_param: Any):
        self.to_host, self.to_device, self.is_param = to_host, to_device, is_param
        self.in_head = False
        self.stash: dict[int, Any] = {}
        self.stash_storage: dict[int, int] = {}
        self.next_id = 0
        self.node: Any = None
        self.node_tensors: list[Any] = []
        self.previous: list[Any] = []
        self._head_hooks = (
            head.register_forward_pre_hook(lambda *_: self._set_head(True)),
            head.register_forward_hook(lambda *_: self._set_head(False), always_call=True),
        )

    def _set_head(self, value: bool) -> None:
        self.in_head = value

    def pack(self, t: Any) -> Any:
        if self.in_head or t.element_size() * t.nelement() < MIN_OFFLOAD_BYTES or self.is_param(t):
            return ("kept", t)
        key = id(t.untyped_storage())
        if key in self.stash_storage:
            return ("kept", t)  # its storage is offloaded and still stashed: a second device reference
        self.next_id += 1
        for old in [i for i in self.stash if i <= self.next_id - FWD_STASH]:
            del self.stash_storage[id(self.stash.pop(old).untyped_storage())]
        host = self.to_host(t)
        self.stash[self.next_id] = t
        self.stash_storage[key] = self.next_id
        return ("host", self.next_id, host)

    def unpack(self, packed: Any) -> Any:
        import torch

        if packed[0] == "kept":
            return packed[1]
        _, tensor_id, host = packed
        if tensor_id in self.stash:
            return self.stash[tensor_id]
        node = torch._C._current_autograd_node()
        if node is not self.node:  # a new node: the one before the last gives up its tensors
            self.node, self.previous, self.node_tensors = node, self.node_tensors, []
        back = self.to_device(host)
        self.node_tensors.append(back)
        return back

    def hooks(self) -> Any:
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def end_of_backward(self) -> None:
        """TRL queues a callback at the end of backward that drops every remaining reference."""
        self.node, self.node_tensors, self.previous = None, [], []
        self.stash.clear()
        self.stash_storage.clear()
