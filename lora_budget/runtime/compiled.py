"""torch.compile as the trace runs it: every decoder layer compiled, backward through inductor's partitioner.

What inductor keeps for backward is decided before any kernel is generated: AOTAutograd traces the
layer's joint forward + backward graph (with inductor's decomposition table,
``torch._inductor.decomposition.select_decomp_table``), inductor's joint-graph passes run, and
``min_cut_rematerialization_partition`` (``torch/_functorch/partitioners.py``) splits it; the forward
graph's extra outputs are the saved tensors. Here the same pipeline runs
(``torch._dynamo.backends.common.aot_autograd`` with inductor's own ``partition_fn`` from
``torch/_inductor/compile_fx.py``), but the partitioned graphs run op by op instead of as generated
C++/Triton, so it works on a CPU-only build and on fake tensors.

Fusion. Inductor runs a chain of pointwise ops (and the reductions they feed) as one kernel, so the
chain's intermediate results are never allocated. The trace follows the partitioner's own test of
that (``is_materialized`` in ``solve_min_cut``): a node computed by a fusible op (``get_default_op_list``:
pointwise, reductions, views) all of whose users are fusible ops too lives inside a kernel. Such a
node runs outside the trace's dispatch modes, so the tracker never counts it; its consumers' outputs
are counted as usual. Known error: inductor's scheduler also fuses less than that in places (a
reduction feeding a pointwise op over a different shape, too many reads per kernel) and reuses dead
buffers in place, so the trace's transients are an estimate; the saved set is the partitioner's, exact.

Scope, as torchtune's ``training.compile_model`` compiles (``torchtune/training/_compile.py``: each
``TransformerSelfAttentionLayer`` with ``m.compile(backend=...)``): the decoder layers only; the
embedding, the final norm, the output head and the loss run eagerly (torchtune compiles its loss
separately, which is not modelled here). Under gradient checkpointing dynamo takes the checkpoint
into the compiled layer as a higher-order op: the partitioner then recomputes the whole layer and
keeps only its input and the RNG state checkpointing preserves (measured:
``scripts/compiled_saved_set.py``); the trace cannot follow that op yet (``check_traceable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from lora_budget.errors import LoraBudgetError


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a transformers (optionally peft-wrapped) causal LM, in order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix, None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise LoraBudgetError(f"--compile: cannot find the decoder layers of {type(base).__name__}")
    return list(layers)


def backend(on_forward: Callable[[Any], None] | None = None) -> Any:
    """A torch.compile backend: inductor's decompositions and partitioner, graphs run op by op.

    ``on_forward(gm)``: called with each partitioned forward graph (``saved_tensors`` reads it)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.compile_fx import partition_fn
    from torch._inductor.decomposition import select_decomp_table

    def forward(gm: Any, example_inputs: Any) -> Any:
        if on_forward is not None:
            on_forward(gm)
        return _fused_graph(gm, example_inputs)

    return aot_autograd(
        fw_compiler=forward,
        bw_compiler=_fused_graph,
        partition_fn=partition_fn,
        decompositions=select_decomp_table(),
    )


def compile_layers(model: Any, on_forward: Callable[[Any], None] | None = None) -> None:
    """Compile every decoder layer in place (``nn.Module.compile``), as torchtune does."""
    import torch

    torch._dynamo.reset()  # no graph cached from an earlier build may be reused
    layers = decoder_layers(model)
    # each layer is its own module instance, guarded apart: without room for one graph per layer (and
    # its recomputation under checkpointing) dynamo would silently run the layers past its limit eagerly
    limit = 4 * len(layers) + 8
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, limit)
    be = backend(on_forward)
    for layer in layers:
        layer.compile(backend=be, dynamic=False)


def check_traceable(spec: Any) -> None:
    """Refuse, before anything is built, a compiled step the trace cannot follow yet.

    Under gradient checkpointing dynamo takes the checkpoint into the compiled layer as a
    higher-order op, and AOTAutograd's forward graph then calls ``run_and_save_rng_state``, a
    higher-order op that a ``TorchDispatchMode`` (the tracker) must handle itself; the tracker does
    not, so checkpointed compiled steps are planned, not traced. LitGPT's loop is not compiled here.
    """
    if spec.grad_ckpt:
        raise LoraBudgetError(
            "--compile with --grad-ckpt: the checkpoint runs inside the compiled layer as a higher-order op "
            "(run_and_save_rng_state) that the tracker cannot follow yet; `lora-budget plan` still answers"
        )
    if spec.framework == "litgpt":
        raise LoraBudgetError("--compile is traced for transformers models, not LitGPT's own loop")


def fused_away(gm: Any) -> Iterator[Any]:
    """Nodes of ``gm`` that inductor computes inside a kernel: fusible op, every user fusible."""
    from torch._functorch.partitioners import get_default_op_list

    ops = get_default_op_list()
    for node in gm.graph.nodes:
        if node.op != "call_function" or not ops.is_fusible(node) or ops.is_view(node):
            continue
        users = list(node.users)
        if users and all(u.op == "call_function" and ops.is_fusible(u) for u in users):
            yield node


def _untracked(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` run with the dispatch modes (the tracker) switched off: a value inside a kernel."""
    from torch.utils._python_dispatch import _disable_current_modes

    def run(*args: Any, **kwargs: Any) -> Any:
        with _disable_current_modes():
            return target(*args, **kwargs)

    run.__name__ = f"fused_{getattr(target, '__name__', 'op')}"
    return run


def _fused_graph(gm: Any, _example_inputs: Any) -> Any:
    """The compiled forward or backward: ``gm`` with its fused-away nodes untracked, run boxed
    (the graph frees each input after its last use, as inductor's generated code does)."""
    from functorch.compile import make_boxed_func

    for node in list(fused_away(gm)):
        node.target = _untracked(node.target)
    gm.recompile()
    return make_boxed_func(gm.forward)


def saved_tensors(gm: Any, user_outputs: int) -> list[tuple[str, str, tuple[Any, ...], str, Any]]:
    """(node, op, shape, dtype, bytes) of a partitioned forward graph's saved outputs: every tensor
    output after the first ``user_outputs``; a graph input kept for backward has op ``input``
    (the layer's input hidden state, and its parameters, which cost nothing extra)."""
    import torch

    out = next(n for n in gm.graph.nodes if n.op == "output")
    rows = []
    for node in out.args[0][user_outputs:]:
        value = getattr(node, "meta", {}).get("val")
        if node is None or not isinstance(value, torch.Tensor):
            continue
        op = "input" if node.op == "placeholder" else str(node.target)
        nbytes = _concrete(value.numel() * value.element_size())
        shape = tuple(_concrete(d) for d in value.shape)
        rows.append((node.name, op, shape, str(value.dtype).replace("torch.", ""), nbytes))
    return rows


def _concrete(value: Any) -> Any:
    """An int, or the text of a symbolic size (the RNG state checkpointing saves has one)."""
    try:
        return int(value)
    except (TypeError, ValueError, RuntimeError):
        return str(value)
