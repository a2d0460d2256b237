"""Count every storage a training step allocates, as the CUDA caching allocator would see it.

A ``TorchDispatchMode`` sees each aten op after autograd, on fake and real tensors alike. For
every tensor an op returns we look at its ``UntypedStorage``: storages are the unit of
allocation (views share their base's storage, so they are never counted twice), and PyTorch
keeps one Python object per storage alive as long as the storage itself, so a weak reference
to it reports the moment the memory is released. Tensors that exist before tracking starts
(parameters, buffers, quantization state) are registered with their category.

Sizes are rounded the way ``c10/cuda/CUDACachingAllocator.cpp`` rounds a request
(``round_size``: up to a multiple of ``kMinBlockSize`` = 512 bytes; zero-byte requests take no
block). That is what ``torch.cuda.memory_allocated`` counts; segment reservation (2 MiB small
pool, 20 MiB large buffers) is reserved memory, not allocated, and belongs to ``overhead``.

Everything the tracker records is an event number: each op is one event, so allocation and
release times can be compared after the run, when the peak is attributed (``attribute.py``).
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lora_budget.core.static import alloc as round_block
from lora_budget.records import dataclass

_SCALAR = torch.ops.aten._local_scalar_dense.default
_NOT_OPS = frozenset({torch.ops.prim.device.default})
"""Queries fake tensors answer through dispatch that allocate nothing and are no op on a real run."""


def _local(tensor: Any) -> Any:
    """The tensor whose storage this rank allocates: a DTensor's local shard, any other tensor itself.

    A sharded (FSDP2) parameter is a ``DTensor`` wrapper whose own storage has the global size;
    the memory one GPU holds is its ``_local_tensor``.
    """
    local = getattr(tensor, "_local_tensor", None)
    return tensor if local is None else local


@dataclass(slots=True)
class Block:
    """One storage: when it was allocated and freed, and what the tracker knows about it."""

    size: int
    """Bytes after allocator rounding."""
    born: int
    """Event (op index) that allocated it; -1 for tensors registered before tracking."""
    phase: str
    step: int
    category: str = ""
    """Set for registered tensors, gradients, optimizer state, logits and activations."""
    died: int | None = None
    numel: int = 0
    pageable: bool = False
    module: str = ""
    """The innermost module running when it was allocated."""
    op: str = ""
    index: int = -1
    """Position in ``Tracker.blocks`` (what ``Tracker.stream`` names)."""


@dataclass(slots=True)
class PeakInfo:
    bytes: int = -1
    event: int = -1
    op: str = ""
    module: str = ""
    phase: str = ""
    step: int = 0


class Tracker(TorchDispatchMode):
    """Live-bytes accounting over storages; enter it (inside any FakeTensorMode) around the step.

    ``vocab``: a tensor whose last dimension is the vocabulary is a logits tensor.
    """

    def __init__(self, vocab: int = 0) -> None:
        super().__init__()
        self.vocab = vocab
        self.blocks: list[Block] = []
        self.live_per_event = array("q")
        """Live bytes after each event (op or phase marker), indexed by event number - 1."""
        self.markers: list[tuple[int, str, int]] = []
        """(event, phase, step) where each phase begins."""
        self.stream = array("q")
        """Allocations and frees in the order they happened: ``i`` allocates ``blocks[i]``,
        ``~i`` frees it (what ``allocator.replay`` feeds the caching-allocator model); each
        block carries its phase and step."""
        self.live_bytes = 0
        self.peak = PeakInfo()
        self.phase = "setup"
        self.step = 0
        self.event = 0
        self.ops = 0
        self.module_stack: list[str] = []
        self.last_module = ""
        """The module entered most recently (where an exception came from)."""
        self._refs: dict[int, tuple[Any, Block]] = {}
        self._op: Any = ""
        self.stub_scalars = False
        """Answer ``.item()`` with 1 (fake tensors have no values). Only set around optimizer
        steps, where scalars scale updates (Adafactor's norms) and never decide a shape."""

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """Let torch.compile'd regions compile under the tracker (dynamo otherwise falls back to eager
        under any user dispatch mode): the compiled graphs' ops still come through here, the compiler's
        own tracing does not (``runtime/compiled.py``)."""
        return True

    # -- registration -------------------------------------------------------------------------
    def block_of(self, tensor: Any) -> Block | None:
        storage = _local(tensor).untyped_storage()
        entry = self._refs.get(id(storage))
        return entry[1] if entry is not None and entry[0]() is storage else None

    def register(self, tensor: Any, category: str) -> None:
        """A tensor allocated before tracking (a parameter, buffer or quantization state)."""
        block = self._track(tensor, born=-1)
        if block is not None and not block.category:
            block.category = category

    def tag(self, tensor: Any, category: str, *, pageable: bool = False) -> Block | None:
        """Name the category of a tensor's storage (gradients, optimizer state).

        A tensor the tracker has not seen (a constant table created outside the traced ops) is
        counted from now on.
        """
        block = self.block_of(tensor) or self._track(tensor, born=self.event)
        if block is not None:
            block.category = category
            block.pageable = block.pageable or pageable
        return block

    def _track(self, tensor: Any, born: int) -> Block | None:
        tensor = _local(tensor)
        storage = tensor.untyped_storage()
        key = id(storage)
        entry = self._refs.get(key)
        if entry is not None and entry[0]() is storage:
            return entry[1]
        size = round_block(storage.nbytes())
        if size == 0:
            return None
        block = Block(
            size=size,
            born=born,
            phase=self.phase,
            step=self.step,
            numel=tensor.numel(),
            module=self.module_stack[-1] if self.module_stack else "",
            op=self._op,
            index=len(self.blocks),
        )
        if self.vocab and tensor.dim() >= 2 and tensor.shape[-1] == self.vocab and born >= 0:
            block.category = "logits"
        self._refs[key] = (weakref.ref(storage, self._freed_callback(key)), block)
        self.stream.append(block.index)
        self.blocks.append(block)
        self.live_bytes += size
        return block

    def storage_resized(self, tensor: Any) -> None:
        """A storage its owner resized in place (FSDP2 frees an unsharded parameter with
        ``storage.resize_(0)`` and regathers into the same storage object): the old block dies
        and, if the storage is not empty now, a new block of its new size is born."""
        storage = _local(tensor).untyped_storage()
        entry = self._refs.get(id(storage))
        if entry is not None and entry[0]() is storage:
            if entry[1].size == round_block(storage.nbytes()):
                return
            del self._refs[id(storage)]
            entry[1].died = self.event
            self.live_bytes -= entry[1].size
            self.stream.append(~entry[1].index)
        if storage.nbytes():
            self._track(tensor, born=self.event)

    def _freed_callback(self, key: int) -> Callable[[Any], None]:
        def freed(_ref: Any) -> None:
            entry = self._refs.pop(key, None)
            if entry is not None:
                entry[1].died = self.event
                self.live_bytes -= entry[1].size
                self.stream.append(~entry[1].index)

        return freed

    # -- phases -------------------------------------------------------------------------------
    def set_phase(self, phase: str, step: int | None = None) -> None:
        self.event += 1
        self.live_per_event.append(self.live_bytes)
        self.phase = phase
        if step is not None:
            self.step = step
        self.markers.append((self.event, phase, self.step))

    def live_blocks(self) -> list[Block]:
        return [entry[1] for entry in self._refs.values()]

    # -- dispatch -----------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is _SCALAR:
            # reads a value, allocates nothing: not an event, so fake and real runs number alike
            if self.stub_scalars:
                return 1.0 if args[0].dtype.is_floating_point else 1
            return func(*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        if func in _NOT_OPS:
            return out
        self._op = func
        self.event += 1
        self.ops += 1
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t, born=self.event)
        self.live_per_event.append(self.live_bytes)
        if self.live_bytes > self.peak.bytes:
            self._new_peak(func)
        return out

    def _new_peak(self, func: Any) -> None:
        node = torch._C._current_autograd_node()
        where = self.module_stack[-1] if self.module_stack else ""
        if node is not None and self.phase == "backward":
            where = f"{node.name()}" + (f" (recomputing {where})" if where else "")
        self.peak = PeakInfo(
            bytes=self.live_bytes,
            event=self.event,
            op=str(func.__name__ if hasattr(func, "__name__") else func),
            module=where,
            phase=self.phase,
            step=self.step,
        )
