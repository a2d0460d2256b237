"""One traced step of a truncated model, read per decoder layer.

The step is the trace engine's (``trace/engine.py``: the real transformers + peft + bitsandbytes
step on fake tensors, warm start then step 1), on a truncated copy of the model at real width (two
decoder layers, or for layers of several types the fewest leading layers that hold every type,
``derive/layers.py``). Hooks on every layer mark where each one's forward and backward run:

- forward: a pre-hook and a hook on each layer give the events of its forward (step 1 only, so a
  checkpointed layer's recomputation in backward is not taken for it);
- backward: a gradient hook on each layer's output fires when the gradient reaching that layer is
  complete, which is where its backward starts; the next layer down's hook ends it.

From the tracker's storages (each counted once, rounded as CUDA's allocator rounds) and its live
bytes after every event:

- ``total``: the activations, storages born in step 1's forward and loss that are alive when
  backward starts, logits excepted (the planner's loss terms hold those);
- ``own[k]``: the part of them born inside layer k, with the layer's output moved to the layer that
  keeps it (the next one, or the final norm) and its input moved in: what layer k keeps for its
  backward, the planner's convention (under checkpointing: the layer input the checkpoint keeps);
- ``head``: what the final norm, the output head and the loss keep (born after the last layer),
  plus the last layer's output the final norm keeps;
- ``forward[k][j]``: live bytes at event j of layer k's forward less the live bytes at backward
  start without the logits (weights, state and every activation), plus what the layers above k
  keep (not yet made when k runs): the forward transient the peak model adds to all activations
  when k is the last layer;
- ``backward[k][j]``: live bytes at event j of layer k's backward less those at its start (less
  the incoming gradient) and less ``grads[k][j]``, the gradients of that layer's parameters made
  by then: the backward working set beside the saved activations; ``layer_grads[k]``: all the
  gradients layer k's backward makes.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from lora_budget.derive.arch import decoder_layers
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """What one traced step of the truncated model measured (bytes)."""

    batch_size: int
    seq_len: int
    total: int
    own: tuple[int, ...]
    head: int
    forward: tuple[tuple[int, ...], ...]
    """Per layer k, its forward's events (see the module docstring), the saved bytes of the layers
    above k added back: relative to what is alive when k runs, not to the whole stack."""
    backward: tuple[tuple[int, ...], ...]
    grads: tuple[tuple[int, ...], ...]
    layer_grads: tuple[int, ...]
    """Per layer: bytes of the parameter gradients its backward makes (alive after it)."""
    wall_s: float


class _Windows:
    """Events of each decoder layer's forward and backward in step 1."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.pre: dict[int, int] = {}
        self.post: dict[int, int] = {}
        self.inp: dict[int, Any] = {}
        self.out: dict[int, Any] = {}
        self.grad_at: dict[int, int] = {}
        self.grad_size: dict[int, int] = {}

    def _live_step(self) -> bool:
        return self.tracker.phase == "forward" and self.tracker.step == 1

    def pre_hook(self, k: int) -> Any:
        def hook(_module: Any, args: Any, kwargs: Any) -> None:
            if not self._live_step() or k in self.pre:
                return
            self.pre[k] = self.tracker.event
            x = args[0] if args else kwargs.get("hidden_states")
            self.inp[k] = self.tracker.block_of(x) if _is_tensor(x) else None

        return hook

    def post_hook(self, k: int) -> Any:
        def hook(_module: Any, _args: Any, _kwargs: Any, output: Any) -> None:
            if not self._live_step() or k in self.post:
                return
            self.post[k] = self.tracker.event
            out = _first_tensor(output)
            self.out[k] = self.tracker.block_of(out) if out is not None else None
            if out is not None and out.requires_grad:
                out.register_hook(self.grad_hook(k))

        return hook

    def grad_hook(self, k: int) -> Any:
        def hook(grad: Any) -> None:
            if k not in self.grad_at:
                self.grad_at[k] = self.tracker.event
                block = self.tracker.block_of(grad)
                self.grad_size[k] = block.size if block is not None else 0

        return hook


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _first_tensor(output: Any) -> Any:
    if _is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and _is_tensor(output[0]):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if _is_tensor(hidden) else None


@contextlib.contextmanager
def _layer_hooks(model: Any, windows: _Windows, layers: int) -> Any:
    _, stack = decoder_layers(model, layers)
    handles = []
    for k, layer in enumerate(stack):
        handles.append(layer.register_forward_pre_hook(windows.pre_hook(k), with_kwargs=True))
        handles.append(layer.register_forward_hook(windows.post_hook(k), with_kwargs=True, always_call=False))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def probe(spec: TrainSpec) -> Probe:
    """Trace ``spec`` (a truncated model) and read it per layer."""
    import time

    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
    )

    from lora_budget.runtime.build import build, import_stack
    from lora_budget.runtime.loop import make_optimizer
    from lora_budget.trace import engine
    from lora_budget.trace.tracker import Tracker

    import_stack(need_bnb=spec.method in ("qlora", "lora8bit") or "8bit" in spec.optimizer)
    started = time.perf_counter()
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build(spec, device="cpu", fake_mode=fake_mode)
        tracker = Tracker(vocab=spec.model.shape.vocab)
        engine.register_static(tracker, built, spec)
        optimizer = make_optimizer(spec, built.trainable, paged=False)
        hooks = engine.Hooks(built, tracker, optimizer, False, 1, True, None)
        windows = _Windows(tracker)
        with _layer_hooks(built.model, windows, spec.model.shape.layers):
            try:
                engine._run(spec, built, tracker, optimizer, hooks, fake_mode, 1, True)
            except (DynamicOutputShapeException, DataDependentOutputException, LoraBudgetError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, LoraBudgetError) and "nonzero" not in text:
                    raise
                raise LoraBudgetError(
                    f"{spec.model.name}: its modelling code makes a tensor whose shape depends on the data "
                    f"({text[:120]}), which the fake-tensor trace cannot follow (an MoE experts loop over routed "
                    "tokens: nonzero/where); its parameters, weights and optimizer state are exact, its "
                    "activations are not derivable"
                ) from None
    return _read(spec, tracker, windows, time.perf_counter() - started)


def _marker(tracker: Any, phase: str, step: int) -> int:
    for event, name, at in tracker.markers:
        if name == phase and at == step:
            return event
    raise LoraBudgetError(f"internal: the traced step has no {phase} phase")


def _alive(block: Any, event: int) -> bool:
    """Alive in the live bytes recorded after ``event`` (a block freed after that record has
    ``died == event``)."""
    return block.born <= event and (block.died is None or block.died >= event)


def _read(spec: TrainSpec, tracker: Any, w: _Windows, wall_s: float) -> Probe:
    layers = spec.model.shape.layers
    last = layers - 1
    missing = [k for k in range(layers) if k not in w.pre or k not in w.post]
    if missing:
        raise LoraBudgetError(f"internal: decoder layer {missing[0]} did not run in the traced forward")
    fwd0 = _marker(tracker, "forward", 1)
    bwd0 = _marker(tracker, "backward", 1)
    opt0 = _marker(tracker, "optimizer", 1)
    live = tracker.live_per_event
    acts = [b for b in tracker.blocks if fwd0 <= b.born < bwd0 and _alive(b, bwd0) and b.category != "logits"]
    total = sum(b.size for b in acts)

    def alive_size(block: Any) -> int:
        return block.size if block is not None and _alive(block, bwd0) else 0

    own = []
    for k in range(layers):
        born = sum(b.size for b in acts if w.pre[k] < b.born <= w.post[k])
        moved_in = alive_size(w.inp[k]) if w.inp[k] is not None and w.inp[k].born <= w.pre[k] else 0
        own.append(born - alive_size(w.out[k]) + moved_in)
    head = sum(b.size for b in acts if b.born > w.post[last]) + alive_size(w.out[last])
    logits_at_bwd = sum(b.size for b in tracker.blocks if b.category == "logits" and _alive(b, bwd0))
    ref_fwd = live[bwd0 - 1] - logits_at_bwd
    forward = []
    for k in range(layers):
        above = sum(own[k + 1 :])
        forward.append(tuple(live[j - 1] - ref_fwd + above for j in range(w.pre[k] + 1, w.post[k] + 1)))
    backward, grads, layer_grads = [], [], []
    for k in range(layers):
        if k not in w.grad_at:
            if k == last:
                raise LoraBudgetError("internal: no gradient reached the last decoder layer's output")
            backward.append(())
            grads.append(())
            layer_grads.append(0)
            continue
        start = w.grad_at[k]
        end = w.grad_at.get(k - 1, opt0)
        ref_bwd = live[start - 1] - w.grad_size[k]
        grads_born = [b for b in tracker.blocks if b.category == "gradients" and start < b.born <= end]
        moments, made = [], []
        for j in range(start + 1, end + 1):
            g = sum(b.size for b in grads_born if _alive(b, j))
            made.append(g)
            moments.append(live[j - 1] - ref_bwd - g)
        backward.append(tuple(moments))
        grads.append(tuple(made))
        layer_grads.append(sum(b.size for b in grads_born if _alive(b, end)))
    return Probe(
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        total=total,
        own=tuple(own),
        head=head,
        forward=tuple(forward),
        backward=tuple(backward),
        grads=tuple(grads),
        layer_grads=tuple(layer_grads),
        wall_s=wall_s,
    )
