"""FSDP2 for the trace: one rank of a world of N, on a fake process group and fake tensors.

The real FSDP2 recipe is: build the model on ``meta``, ``fully_shard`` every decoder layer and
then the root, ``to_empty`` on the device, initialise. Here the model is first materialised as
fake tensors (``build._materialize``) and then sharded, inside the same ``FakeTensorMode``:
``fully_shard`` chunks each parameter on dim 0 and keeps rank 0's padded shard as the local
tensor of a ``DTensor``, exactly the tensors a real rank 0 holds. Collectives go to PyTorch's
``fake`` backend (``torch.testing._internal.distributed.fake_pg``), which returns at once and
leaves the preallocated output buffers as they are; no kernel runs on fake tensors anyway.

Rank 0 holds the largest shard (``torch.chunk`` gives the first ranks ``ceil(d0 / N)`` rows), so
its bytes are the per-GPU figure to plan for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec


@contextlib.contextmanager
def fake_world(world_size: int) -> Iterator[Any]:
    """A fake process group of ``world_size`` ranks (this process is rank 0) and its 1-D device mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise LoraBudgetError("a torch.distributed process group is already initialised in this process")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        # the mesh is built outside any FakeTensorMode: it reads its rank table with .tolist()
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a transformers (or peft-wrapped) causal LM, in order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise LoraBudgetError(f"cannot find the decoder layers of {type(base).__name__} to shard")
    return layers


def shard(model: Any, spec: TrainSpec, mesh: Any) -> None:
    """``fully_shard`` every decoder layer, then the root (FSDP2 defaults: reshard after forward,
    no mixed-precision policy, so parameters are gathered and gradients reduced in their own dtype)."""
    from torch.distributed.fsdp import fully_shard

    if spec.strategy != "fsdp":
        raise LoraBudgetError(f"the trace runs FSDP2 only; --strategy {spec.strategy} is plan-only")
    if spec.offload != "none":
        raise LoraBudgetError(
            "the trace cannot run --offload: its fake device is the CPU, so CPU and GPU memory would be one; "
            "`lora-budget plan` answers for it"
        )
    kwargs: dict[str, Any] = {"mesh": mesh}
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)


@contextlib.contextmanager
def resizes_reported(on_resize: Any) -> Iterator[None]:
    """Call ``on_resize(tensor)`` after FSDP2 resizes a storage in place.

    FSDP2 frees an unsharded parameter between uses with ``storage.resize_(0)`` and regathers it
    into the same storage object (``_fsdp_param.free_storage`` / ``alloc_storage``); that is no
    aten op, so a dispatch-mode tracker would not see the bytes come and go.
    """
    from unittest import mock

    from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group

    alloc, free = _fsdp_param.alloc_storage, _fsdp_param.free_storage

    def alloc_reported(tensor: Any) -> None:
        alloc(tensor)
        on_resize(tensor)

    def free_reported(tensor: Any) -> None:
        free(tensor)
        on_resize(tensor)

    with (
        mock.patch.object(_fsdp_param, "alloc_storage", alloc_reported),
        mock.patch.object(_fsdp_param, "free_storage", free_reported),
        mock.patch.object(_fsdp_param_group, "alloc_storage", alloc_reported),
    ):
        yield


def gathered_tensors(model: Any) -> list[Any]:
    """The unsharded (all-gathered) parameter storages FSDP2 keeps per parameter, empty or not."""
    from torch.distributed.fsdp import FSDPModule

    out = []
    for module in model.modules():
        if isinstance(module, FSDPModule):
            group = module._get_fsdp_state()._fsdp_param_group
            for fsdp_param in group.fsdp_params if group is not None else ():
                out.extend(getattr(fsdp_param, "all_gather_outputs", ()) or ())
    return out


@contextlib.contextmanager
def quant_state_restored(spec: TrainSpec) -> Iterator[None]:
    """Let bitsandbytes' 4-bit layers find their quantization state on FSDP2's gathered weight.

    FSDP2 swaps a plain full-size parameter in for each gathered weight, which has lost the
    ``quant_state`` attribute. bitsandbytes handles exactly this case (``Linear4bit.forward`` calls
    ``fix_4bit_weight_quant_state_from_module``): it re-wraps the weight as ``Params4bit`` and puts
    the module's ``quant_state`` back on it. ``Params4bit`` cannot wrap a fake tensor, so here only
    the attribute is put back; the bytes are the same (the wrap is a view, no copy).
    """
    if spec.method != "qlora":
        yield
        return
    from unittest import mock

    from bitsandbytes.nn import modules

    def restore(module: Any) -> None:
        if getattr(module.weight, "quant_state", None) is None:
            module.weight.quant_state = module.quant_state

    with mock.patch.object(modules, "fix_4bit_weight_quant_state_from_module", restore):
        yield
