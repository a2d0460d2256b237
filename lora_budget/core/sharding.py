"""Per-GPU memory of data-parallel training on N GPUs, as a transform of the single-GPU peak model.

Every GPU runs its own micro-batch, so activations, logits and the backward working set are the
single-GPU figures. What changes is where the step's state lives and which communication
buffers exist. Symbols: N GPUs; ``shard(t)`` is rank 0's part of tensor t (the largest:
``torch.chunk`` gives the first ranks ``ceil(d0 / N)`` rows of dim 0), ``flat(n) = ceil(n / N)``
for DeepSpeed's flat partitions; R / G the bytes of the root's / one decoder layer's parameters
gathered back to full size; g_l the unsharded gradients of one layer's trainable parameters.

========  ===========  ==========  ===========  ==========  ========================================
strategy  weights      gradients   optimizer,   adapters    communication buffers
                                   master
========  ===========  ==========  ===========  ==========  ========================================
ddp       full         full        full         full        a bucket copy of every gradient (below)
zero1     full         full        / N          full        reduce bucket in backward
zero2     full         / N         / N          full        reduce bucket + g_l in backward
zero3     / N          / N         / N          / N         gathered layer + prefetch, reduce bucket
fsdp      / N          / N         / N          / N         R + G + F, and RS in backward (FSDP2,
                                                            traced; symbols below)
========  ===========  ==========  ===========  ==========  ========================================

Only trainable parameters have gradients and optimizer state, so LoRA shards only the adapters'
(DeepSpeed's ``estimate_zero*_model_states_mem_needs`` assumes every parameter trains, which
overstates LoRA by the whole frozen model's gradients and Adam state). Frozen weights are
sharded by zero3/fsdp and replicated by ddp/zero1/zero2. Quantization state (QLoRA absmax) is
module state, not a parameter: it is replicated everywhere.

Sources and constants:

- DDP: the reducer allocates one flat bucket per ``bucket_cap_mb`` (25 MiB) of gradients at
  construction, so the buckets hold a second full copy of the gradients, alive for the whole run.
  torch docs, ``DistributedDataParallel(gradient_as_bucket_view=...)``: "When set to True,
  gradients will be views pointing to different offsets of allreduce communication buckets. This
  can reduce peak memory usage, where the saved memory size will be equal to the total gradients
  size." (pytorch/pytorch#41954, which added it, measured ~1 GB less peak for a ~1 GB-parameter
  model.) We plan the default (False) and count the buckets as gradients.
- ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models", stages Pos / Pos+g / Pos+g+p): DeepSpeed's defaults ``reduce_bucket_size`` = 5e8
  elements, ``stage3_prefetch_bucket_size`` = 5e7 elements (deepspeed.ai/docs/config-json).
  The buckets are capped at the model's own trainable (reduce) or layer (prefetch) size. zero1/2/3
  figures are this partitioning model, not traced; DeepSpeed's own bf16 optimizer also keeps an fp32
  gradient partition that ``--master-weights`` plans as master weights.
- FSDP2 (``torch.distributed.fsdp.fully_shard`` on each decoder layer and the root, torch 2.13,
  checked by ``lora-budget trace`` on a fake process group): each parameter keeps its padded shard;
  before a layer runs, one flat all-gather buffer F of N shards is filled and copied out into one
  full-size tensor per parameter (G per layer). In the forward a layer's F is freed only after the
  next layer's copy-out (``wait_for_unshard``: overlap of copy-out and the next all-gather), so the
  last layer's lives until backward starts. The root (embeddings, final norm, lm_head; R) is not
  resharded after the forward. In the backward each layer prefetches the next layer's all-gather
  (another F) and copies its gradients into a flat reduce-scatter input of N shards (RS) that
  lives until the next layer's reduce-scatter, so a middle layer's backward holds R + G + F + RS;
  with checkpointing the recompute's all-gather adds one more F to the first layer's backward.
  The root's gradients stay full-size until the root's post-backward, at the very end.
- Offload: ``optimizer`` moves optimizer state, master weights and the gradient partitions to CPU
  memory (DeepSpeed ZeRO-Offload); ``params`` moves the parameter shards too (zero3
  ``offload_param``; FSDP2 ``CPUOffloadPolicy`` keeps sharded parameters, gradients and optimizer
  state on the CPU and runs the step there). Gathered layers and buckets stay on the GPU.

Known error: DeepSpeed's allocation pattern (bucket lifetimes, ``stage3_max_live_parameters``) is
modelled, not measured; FSDP2's is traced (plan vs trace in tests/test_sharding.py).
"""

from __future__ import annotations

from collections.abc import Callable

from lora_budget import records
from lora_budget.core.lora import adapter_tensors, resolve_targets
from lora_budget.core.peak import PeakModel
from lora_budget.core.static import StaticMemory, _optimizer, alloc, quantized_inventory
from lora_budget.records import dataclass
from lora_budget.spec import DTYPE_BYTES, TrainSpec

ZERO_REDUCE_BUCKET = 500_000_000
"""DeepSpeed ``zero_optimization.reduce_bucket_size`` default, in elements."""
ZERO3_PREFETCH_BUCKET = 50_000_000
"""DeepSpeed ``zero_optimization.stage3_prefetch_bucket_size`` default, in elements."""

PHASES = ("forward", "loss", "backward_start", "backward_last", "backward_first", "backward_embed", "optimizer")
"""The seven kinds of candidate peak the sharding transform distinguishes."""

SLOT = (0, 1, 2, 3, 3, 4, 4, 5, 6)
"""The kind of each of ``PeakModel._phases``' nine candidates: a layer's MLP backward and its
attention backward (which comes after) share the layer's transform. Candidates after these
(chunked-ce's lm_head backward) are of the loss-backward kind."""


@dataclass(frozen=True, slots=True)
class _Tensor:
    shape: tuple[int, ...]
    count: int
    """Copies in one decoder layer (``layer``) or in the whole model (root)."""
    nbytes: float
    """Bytes per element (0.5 for packed 4-bit)."""
    trainable: bool
    grad_bytes: int
    layer: bool
    adapter: bool = False


def _tensors(spec: TrainSpec) -> list[_Tensor]:
    """Every parameter as FSDP2 sees it: per decoder layer, or in the root."""
    s = spec.model.shape
    w = DTYPE_BYTES[spec.dtype]
    full = spec.method == "full"
    out = []
    for t in quantized_inventory(s, spec.experts_quantized):  # transformers 4.x: experts quantized too
        in_layer = t.role not in ("embedding", "lm_head") and t.name != "final_norm"
        count = t.count // s.layers if in_layer else t.count
        if spec.method == "qlora" and t.role == "linear":
            out.append(_Tensor((-(-t.numel // 2), 1), count, 1, False, 0, in_layer))  # Params4bit: packed uint8
        elif spec.method == "lora8bit" and t.role == "linear":
            out.append(_Tensor(t.shape, count, 1, False, 0, in_layer))
        else:
            out.append(_Tensor(t.shape, count, w, full, w, in_layer))
    if not full:
        a = DTYPE_BYTES[spec.adapter_dtype]
        for _numel, count, shape in adapter_tensors(s, resolve_targets(s, spec.targets, spec.rank), spec.rank):
            out.append(_Tensor(shape, count // s.layers, a, True, a, True, adapter=True))
    return out


def _rows(shape: tuple[int, ...], n: int) -> int:
    """Elements of rank 0's dim-0 chunk of a tensor (``torch.chunk``; FSDP2 pads the others to it)."""
    rest = 1
    for d in shape[1:]:
        rest *= d
    return -(-shape[0] // n) * rest


@dataclass(frozen=True, slots=True)
class _Groups:
    """Per-GPU byte totals of one FSDP2 group (a decoder layer, or the root)."""

    gathered: int
    """Full-size parameters after the all-gather copy-out (one tensor per parameter)."""
    flat: int
    """The flat all-gather buffer: N padded shards of every parameter."""
    grads_full: int
    """The trainable parameters' gradients at full size, as autograd makes them."""
    reduce_input: int
    """The flat reduce-scatter input: N padded shards of every trainable gradient."""


def _group(tensors: list[_Tensor], n: int) -> _Groups:
    gathered = flat = grads = reduce = 0
    for t in tensors:
        padded = n * _rows(t.shape, n)
        gathered += alloc(padded * t.nbytes) * t.count
        flat += padded * t.nbytes * t.count
        if t.trainable:
            numel = 1
            for d in t.shape:
                numel *= d
            grads += alloc(numel * t.grad_bytes) * t.count
            reduce += padded * t.grad_bytes * t.count
    return _Groups(gathered=gathered, flat=alloc(flat), grads_full=grads, reduce_input=alloc(reduce))


@dataclass(frozen=True, slots=True)
class ShardedPeakModel(PeakModel):
    """``PeakModel`` of one GPU of N: ``static`` holds per-GPU state; every phase adds ``comm``.

    ``grad_scale`` maps the single-GPU gradients of each phase to per-GPU ones (numerator,
    denominator); ``grad_extra`` and ``comm`` are per-phase bytes (gradients, temporaries) added on
    top. The fit search still costs a handful of multiply-adds per evaluation.
    """

    single: PeakModel | None = None
    """The single-GPU model whose phases are transformed."""
    grad_scale: tuple[tuple[int, int], ...] = ()
    grad_extra: tuple[int, ...] = ()
    comm: tuple[int, ...] = ()
    middle: tuple[int, int] = (0, 0)
    """FSDP2 only, L >= 3: (gradient bytes added, communication bytes) of the second-to-last layer's
    backward, which holds the last layer's reduce-scatter input and the next layer's prefetched
    all-gather at once; its activations are the last layer's phase less one layer's saved bytes."""

    def _phases(self, batch_size: int, seq_len: int) -> list[tuple[str, int, int, int, int]]:
        out = []
        for i, (phase, grads, acts, logits, temp) in enumerate(self.single._phases(batch_size, seq_len)):
            j = SLOT[i] if i < len(SLOT) else 2  # chunked-ce's head phases are loss-backward moments
            num, den = self.grad_scale[j]
            if phase == "optimizer":  # the step's temporaries are those of the state this rank steps
                temp = self.static.optimizer_step_temp
            out.append((phase, grads * num // den + self.grad_extra[j], acts, logits, temp + self.comm[j]))
        if self.middle[1]:
            _, grads, acts, _, temp = out[3]
            a = self.acts
            rows = batch_size * self.spec.sequences_per_example
            freed = rows * seq_len * (a.checkpoint if self.spec.grad_ckpt else a.layer).at(seq_len)
            comm = self.middle[1] - self.comm[3]
            out.append(("backward", grads + self.middle[0], int(acts - freed), 0, temp + comm))
        return out


def shard_peak_model(model: PeakModel) -> PeakModel:
    """The per-GPU model of ``model.spec`` (the model itself for one GPU)."""
    spec = model.spec
    n = spec.gpus
    if n == 1:
        return model
    st = model.static
    strategy, offload = spec.strategy, spec.offload
    tensors = _tensors(spec)
    layer = _group([t for t in tensors if t.layer], n)
    root = _group([t for t in tensors if not t.layer], n)
    L = spec.model.shape.layers
    shard_params = strategy in ("zero3", "fsdp")
    shard_grads = strategy in ("zero2", "zero3", "fsdp")
    shard_state = strategy != "ddp"

    def part(total: int) -> int:  # a flat partition (DeepSpeed) of a per-tensor-rounded total
        return alloc(-(-total // n)) if total else 0

    if strategy == "fsdp":  # per-parameter padded shards

        def shards(keep: Callable[[_Tensor], bool], per: Callable[[_Tensor], float]) -> int:
            return sum(alloc(_rows(t.shape, n) * per(t)) * t.count * (L if t.layer else 1) for t in tensors if keep(t))

        weights = shards(lambda t: not t.adapter, lambda t: t.nbytes)
        adapter = shards(lambda t: t.adapter, lambda t: t.nbytes)
        grads = shards(lambda t: t.trainable, lambda t: t.grad_bytes)
        layer_shards = shards(lambda t: t.trainable and t.layer, lambda t: t.grad_bytes)
        # the optimizer sees each parameter's local shard (a DTensor): per-tensor state of the shard's shape
        local = [
            (_rows(t.shape, n), t.count * (L if t.layer else 1), (-(-t.shape[0] // n), *t.shape[1:]))
            for t in tensors
            if t.trainable
        ]
        state_bytes = 4 if spec.master_weights else next(t.grad_bytes for t in tensors if t.trainable)
        optimizer, pageable, step_temp = _optimizer(spec.optimizer, local, state_bytes)
        master = sum(alloc(numel * 4) * count for numel, count, _ in local) if spec.master_weights else 0
    else:
        weights = part(st.weights) if shard_params else st.weights
        adapter = part(st.adapter) if shard_params else st.adapter
        grads = part(st.gradients) if shard_grads else st.gradients
        layer_shards = grads
        optimizer = part(st.optimizer) if shard_state else st.optimizer
        pageable = part(st.optimizer_pageable) if shard_state else st.optimizer_pageable
        master = part(st.master_weights) if shard_state else st.master_weights
        step_temp = part(st.optimizer_step_temp) if shard_state else st.optimizer_step_temp
    resident_grads = grads
    if offload != "none":
        optimizer = pageable = master = step_temp = 0
        if shard_grads:
            resident_grads = layer_shards = 0  # reduced partitions go to CPU memory
    if offload == "params":
        weights = adapter = 0
    static = records.replace(
        st,
        weights=weights,
        adapter=adapter,
        master_weights=master,
        optimizer=optimizer,
        optimizer_pageable=pageable,
        optimizer_step_temp=step_temp,
        gradients=resident_grads,
    )
    scale, extra, comm = _comm(spec, st, layer, root, resident_grads, layer_shards)
    middle = (0, 0)
    if strategy == "fsdp" and L >= 3:
        one_layer = layer_shards // L if offload == "none" else 0
        middle = (one_layer, root.gathered + layer.gathered + layer.flat + layer.reduce_input)
    return ShardedPeakModel(
        spec=spec,
        static=static,
        acts=model.acts,
        overhead_bytes=model.overhead_bytes,
        single=model,
        grad_scale=scale,
        grad_extra=extra,
        comm=comm,
        middle=middle,
    )


def _comm(
    spec: TrainSpec, st: StaticMemory, layer: _Groups, root: _Groups, grads: int, layer_shards: int
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], tuple[int, ...]]:
    """(gradient scale, extra gradient bytes, communication bytes) for each of the seven phases."""
    strategy = spec.strategy
    full_grads = st.gradients
    keep = ((1, 1),) * 7
    if strategy == "ddp":
        return keep, (full_grads,) * 7, (0,) * 7
    gb = DTYPE_BYTES[spec.dtype] if spec.method == "full" else DTYPE_BYTES[spec.adapter_dtype]
    bucket = alloc(min(ZERO_REDUCE_BUCKET, st.trainable_params) * gb)
    g_l = layer.grads_full
    if strategy == "zero1":
        return keep, (0,) * 7, (0, 0, 0, bucket, bucket, bucket, 0)
    # per-GPU gradients replace the single-GPU ones: scale = 0, the sharded total added back
    if strategy == "zero2":
        none = ((0, 1),) * 7
        part = (0, 0, 0, grads, grads, grads, grads) if spec.grad_accum == 1 else (grads,) * 7
        return none, part, (0, 0, 0, bucket + g_l, bucket + g_l, bucket, 0)
    if strategy == "zero3":
        prefetch = alloc(min(ZERO3_PREFETCH_BUCKET * DTYPE_BYTES[spec.dtype], layer.gathered))
        none = ((0, 1),) * 7
        part = (0, 0, 0, grads, grads, grads, grads) if spec.grad_accum == 1 else (grads,) * 7
        working = layer.gathered + prefetch
        return none, part, (working, root.gathered, 0, working + bucket + g_l, working + bucket + g_l, bucket, 0)
    # fsdp (FSDP2): the root's gradients stay full-size until the end of backward; layers' are sharded
    accum = spec.grad_accum > 1
    head = st.head_gradients
    R, G, F = root.gathered, layer.gathered, layer.flat
    # before the root's post-backward only the layers' gradients are sharded
    before = grads if accum else 0
    layers_done = grads if accum else layer_shards
    grads_phases = (
        before,
        before,
        before,
        before + head,
        layers_done + head,
        layers_done + root.grads_full,
        grads,
    )
    RS = layer.reduce_input
    # with checkpointing the first layer's backward also holds the flat buffer of its recompute's all-gather
    recompute = F if spec.grad_ckpt else 0
    comm = (
        R + G + F,  # the last layer's forward: its parameters and its own flat all-gather buffer
        R + F,  # loss: that buffer is freed only when backward starts
        R + F,  # backward start: the last layer gathered again (flat buffer, before its copy-out)
        R + G + F,  # the last layer's backward: its parameters and the next layer's prefetched all-gather
        R + G + RS + recompute,  # the first layer's backward: the previous layer's reduce-scatter input
        R + RS,  # the embedding backward, before the root reduces
        0,
    )
    return ((0, 1),) * 7, grads_phases, comm
