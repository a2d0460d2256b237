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
"""``min_offload_size=1024``: smaller saved tensors stay on the device."""
FWD_STASH = 5
"""``max_fwd_stash_size=5``: the device copies of the last five offloaded tensors stay alive until
their copy to the host is known to be done (``use_streams=True``, the default)."""


class ActivationOffload:
    """Saved-tensor hooks with the rules of activation offloading, written here from them (the
    streamed path, ``use_streams=True``, both frameworks' default), for the two sources:

    ``rules="trl"``: TRL's ``OffloadActivations`` (``trl/models/activation_offloading.py`` v1.9.0,
    ``activation_offloading=True``; the context wraps the whole ``training_step``: forward, loss
    and backward). ``rules="torchtune"``: torchtune's (``torchtune/training/_activation_offloading.py``
    at bd2a0fc7c, ``enable_activation_offloading``; the recipe enters it around ``self._model(**batch)``
    only, so nothing after the output head, the loss, is offloaded).

    Pack (forward), in TRL's order:

    - TRL only: a storage whose key (storage, offset, dtype) is tracked stays on the device as a
      second reference, and that id then holds the key (so the storage stays kept while it does);
    - tensors under 1,024 bytes stay; parameters and buffers stay (TRL: any tensor whose storage is
      a parameter's, views included, ``is_param``; torchtune: ``isinstance(t, nn.Parameter)`` only);
    - anything saved inside the output head's forward stays (both hook ``lm_head``/``output`` with a
      no-op ``saved_tensors_hooks``);
    - every other tensor is copied to the host. TRL first clones a non-contiguous view or one with a
      storage offset (``clone``/``contiguous``), and stashes that copy. The device tensor is kept in
      the forward stash; offloading a new tensor releases those five or more offloads old.

    Unpack (backward), per autograd node: a tensor still in the forward stash is returned as it is;
    otherwise a device copy comes back and is kept in the backward stash. The first time a node
    unpacks an offloaded tensor it notes the backward stash's ids, and a post hook of that node
    (``node.register_hook``) releases them when the node is done, together with the whole forward
    stash; a copy whose storage gained users while the node ran (a view of it was kept) leaves the
    stash at once (``record_stream``), living as long as those users. At the end of backward
    (``end_of_backward``, TRL's and torchtune's queued callback) every remaining copy is released.

    ``to_host`` / ``to_device`` as for ``install``; ``is_param(t)``: whether a tensor's storage is a
    model parameter's or buffer's (the trace: a block registered before the step).
    """

    def __init__(
        self,
        head: Any,
        to_host: Callable[[Any], Any],
        to_device: Callable[[Any], Any],
        is_param: Any,
        rules: str = "trl",
    ):
        if rules not in ("trl", "torchtune"):
            raise ValueError(f"unknown offloading rules {rules!r}")
        self.to_host, self.to_device, self.is_param, self.rules = to_host, to_device, is_param, rules
        self.in_head = False
        self.forward_done = False
        """torchtune: the model's forward has reached its output head; what follows is outside the context."""
        self.next_id = 0
        self.fwd_stash: dict[int, Any] = {}
        self.bwd_stash: dict[int, Any] = {}
        self.storage_to_id: dict[Any, int] = {}
        self.key_by_id: dict[int, Any] = {}
        self.node: Any = None
        self._head_hooks = (
            head.register_forward_pre_hook(lambda *_: self._set_head(True)),
            head.register_forward_hook(lambda *_: self._set_head(False), always_call=True),
        )

    def _set_head(self, value: bool) -> None:
        self.in_head = value
        if not value and self.rules == "torchtune":
            self.forward_done = True

    def _release_key(self, tensor_id: int) -> None:
        key = self.key_by_id.pop(tensor_id, None)
        if key is not None and self.storage_to_id.get(key) == tensor_id:
            del self.storage_to_id[key]

    def _track_key(self, key: Any, tensor_id: int) -> None:
        self.storage_to_id[key] = tensor_id
        self.key_by_id[tensor_id] = key

    def pack(self, t: Any) -> Any:
        import torch

        if self.in_head or self.forward_done:
            return ("kept", t)  # under the head's no-op hooks, or outside torchtune's context: not seen
        self.next_id += 1
        tensor_id = self.next_id
        trl = self.rules == "trl"
        key = (id(t.untyped_storage()), t.storage_offset(), t.dtype)
        if trl and key in self.storage_to_id:
            self._track_key(key, tensor_id)
            return ("kept", t)  # its storage is offloaded and still tracked: a second device reference
        param = self.is_param(t) if trl else isinstance(t, torch.nn.Parameter)
        if t.element_size() * t.nelement() < MIN_OFFLOAD_BYTES or param:
            return ("kept", t)
        for old in [i for i in self.fwd_stash if i <= tensor_id - FWD_STASH]:
            del self.fwd_stash[old]
            self._release_key(old)
        layout = None
        if trl and 0 in t.stride():  # a broadcast: its storage goes to the host, the view is rebuilt
            layout = (tuple(t.size()), tuple(t.stride()), t.storage_offset())
            base = torch.as_strided(t, (t.untyped_storage().nbytes() // t.element_size(),), (1,), 0)
            host = self.to_host(base)
        else:
            if trl and (not t.is_contiguous() or t.storage_offset() != 0):
                t = t.clone(memory_format=torch.contiguous_format)
            host = self.to_host(t)
        self.fwd_stash[tensor_id] = t
        if trl:
            self._track_key(key, tensor_id)
        return ("host", tensor_id, host, layout)

    def unpack(self, packed: Any) -> Any:
        import torch

        if packed[0] == "kept":
            return packed[1]
        _, tensor_id, host, layout = packed
        self._release_key(tensor_id)
        node = torch._C._current_autograd_node()
        previous: list[int] = []
        if node != self.node:  # a new node: the tensors brought back before it go when it is done
            self.node = node
            previous = list(self.bwd_stash)
        brought_back = tensor_id not in self.fwd_stash
        if brought_back:
            back = self.to_device(host)
            if layout is not None:
                back = torch.as_strided(back, *layout)
            self.bwd_stash[tensor_id] = back
            users = torch._C._storage_Use_Count(back.untyped_storage()._cdata)
        else:
            back = self.fwd_stash[tensor_id]

        def done(*_: Any) -> None:
            if brought_back and tensor_id in self.bwd_stash:
                copy = self.bwd_stash[tensor_id]
                if torch._C._storage_Use_Count(copy.untyped_storage()._cdata) > users:
                    del self.bwd_stash[tensor_id]  # record_stream: its other users keep it
            for i in list(self.fwd_stash):
                del self.fwd_stash[i]
                self._release_key(i)
            for i in previous:
                self.bwd_stash.pop(i, None)

        if node is not None:
            node.register_hook(done)
        return back

    def hooks(self) -> Any:
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def end_of_backward(self) -> None:
        """The callback both queue at the end of backward: every remaining copy is released."""
        self.node = None
        self.bwd_stash.clear()
        self.fwd_stash.clear()
        self.storage_to_id.clear()
        self.key_by_id.clear()
        self.forward_done = False
        self.next_id = 0
