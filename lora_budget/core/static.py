"""Memory that lives for the whole step: weights, quantization state, adapters, gradients, optimizer.

Every tensor is rounded the way PyTorch's CUDA caching allocator rounds a request: up to a
multiple of 512 bytes (``kMinBlockSize`` in c10/cuda/CUDACachingAllocator.cpp, ``round_size``).
For a 7B model that changes totals by kilobytes; it matters for tiny models and is free here.
"""

from __future__ import annotations

import operator
from functools import lru_cache

from lora_budget import records
from lora_budget.catalog.shape import ModelShape
from lora_budget.core.lora import adapted, adapter_tensors, resolve_targets
from lora_budget.core.params import ParamTensor, inventory, module_names
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass
from lora_budget.spec import DTYPE_BYTES, TrainSpec

BLOCK = 512
"""Caching allocator granularity in bytes."""

BNB_OPT_BLOCK = 256
"""bitsandbytes 8-bit optimizers quantize state in blocks of 256 values, one fp32 absmax each."""

BNB_MIN_8BIT_SIZE = 4096
"""bitsandbytes keeps 32-bit optimizer state for tensors with fewer elements (``min_8bit_size``)."""

BNB_PAGE_MIN_NUMEL = 100_000
"""Paged optimizers allocate paged (unified) memory only for tensors of at least 1e5 elements."""


def alloc(nbytes: float) -> int:
    """Bytes the caching allocator hands out for a request of ``nbytes``."""
    n = int(-(-nbytes // 1))
    if n == 0:
        return 0
    return -(-n // BLOCK) * BLOCK


@dataclass(frozen=True, slots=True)
class StaticMemory:
    weights: int
    quant_state: int
    adapter: int
    master_weights: int
    gradients: int
    """Gradients once every trainable parameter has one (end of backward)."""
    optimizer: int
    optimizer_pageable: int
    """Part of ``optimizer`` in paged (unified) memory, which the driver can evict to CPU."""
    optimizer_step_temp: int
    """Transient bytes inside optimizer.step()."""
    trainable_params: int
    head_gradients: int
    """Gradients produced before the first decoder layer's backward (lm_head, final norm)."""
    embedding_gradients: int
    """Gradients the embedding backward produces last (untied token and position embeddings)."""
    layer_gradients: int
    """Gradients of one decoder layer's trainable tensors."""
    layer_gradients_before_attention: int
    """The part of ``layer_gradients`` backward makes before the layer's attention kernel: the
    MLP's and the o projection's (norms, a few KiB, left out)."""
    embedding_grad_temp: int
    """A tied embedding's second gradient and the sum AccumulateGrad makes of the two."""
    dequant_bytes: int
    """Largest quantized weight dequantized to the compute dtype."""
    dequant_attn_bytes: int = 0
    """Largest quantized attention weight dequantized (what attention's backward holds)."""


def _quant4_state(numel: int, blocksize: int, double_quant: bool) -> int:
    """bitsandbytes ``quantize_4bit`` state of one weight.

    absmax: one value per ``blocksize`` weights; fp32, or with double quantization uint8 plus
    an fp32 absmax per 256 of those and an fp32 offset scalar. Each QuantState also holds its own
    16-entry fp32 code table (``get_4bit_type`` builds a new tensor per call), and with double
    quantization its nested state holds a private copy of the 256-entry fp32 dynamic map
    (``quantize_blockwise`` stores ``code.to(device, copy=True)``, bitsandbytes 0.50). The trace
    found that copy: an earlier version of this planner counted the map once per device.
    """
    blocks = -(-numel // blocksize)
    code = alloc(16 * 4)
    if not double_quant:
        return alloc(4 * blocks) + code
    nested_code = alloc(256 * 4)
    return alloc(blocks) + alloc(4 * -(-blocks // 256)) + alloc(4) + code + nested_code


PER_STEP_FIELDS = frozenset({"batch_size", "seq_len", "warnings"})
"""``TrainSpec`` fields no batch- and sequence-independent part of a plan reads (warnings change no byte)."""


class StepKey:
    """A spec seen without its micro-batch and sequence length: equal (and hashing equal) for specs
    that differ only there. Everything ``PeakModel`` holds is a function of it, so caches of static
    memory and of whole models key on it; ``spec`` is the first spec seen, the one built from."""

    __slots__ = ("spec", "_values", "_hash")
    _get: operator.attrgetter | None = None

    def __init__(self, spec: TrainSpec) -> None:
        if StepKey._get is None:
            names = [f.name for f in records.fields(type(spec)) if f.name not in PER_STEP_FIELDS]
            StepKey._get = operator.attrgetter(*names)
        self.spec = spec
        self._values = StepKey._get(spec)
        try:
            self._hash = hash(self._values)
        except TypeError:  # a field TrainSpec does not check holds a list or a dict
            names = [f.name for f in records.fields(type(spec)) if f.name not in PER_STEP_FIELDS]
            bad = next(n for n, v in zip(names, self._values, strict=True) if not _hashable(v))
            value = getattr(spec, bad)
            raise LoraBudgetError(f"{bad} must be a plain value (a number, bool or str), got {value!r}") from None

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepKey) and self._values == other._values


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def static_memory(spec: TrainSpec) -> StaticMemory:
    """Weights, quantization state, adapters, gradients and optimizer state of ``spec`` (cached by
    ``StepKey``: none of it depends on the micro-batch or the sequence length)."""
    return _static_memory(StepKey(spec))


SHARDING_FIELDS = {"gpus": 1, "strategy": "ddp", "offload": "none"}
"""The fields that say how a step is spread over GPUs, at their one-GPU values. The static memory
here is one GPU's whole model, which ``core/sharding.py`` divides; no line of ``_unsharded``
reads these fields (nor does any ``TrainSpec`` property it reads), so every world size and
strategy of a spec shares one computation (a plan's multi-GPU suggestions try up to 36)."""


@lru_cache(maxsize=4096)
def _static_memory(key: StepKey) -> StaticMemory:
    spec = key.spec
    if any(getattr(spec, name) != value for name, value in SHARDING_FIELDS.items()):
        return _static_memory(StepKey(records.replace(spec, **SHARDING_FIELDS)))
    return _unsharded(spec)


def _unsharded(spec: TrainSpec) -> StaticMemory:
    s = spec.model.shape
    litgpt = spec.framework == "litgpt"
    if litgpt:  # LitGPT's own layout: fused qkv, an untied lm_head that Fabric quantizes too
        from lora_budget.core import litgpt as lit

        s = lit.layout(s)
    w = DTYPE_BYTES[spec.dtype]
    dense = spec.frozen_dense_bytes  # the non-quantized weights of a QLoRA / 8-bit model
    weights = quant = adapter = master = grads = head_grads = embed_grads = embed_temp = 0
    trainable: list[tuple[int, int, tuple[int, ...]]] = []  # (numel, count, shape) of trainable tensors
    dequant = dequant_attn = 0
    quantized_linears = spec.method in ("qlora", "lora8bit")
    reward = spec.objective == "reward"  # a sequence classifier: a score head (h x 1) instead of lm_head
    for t in quantized_inventory(s, spec.experts_quantized and not litgpt):
        if reward and t.role == "lm_head":
            continue
        if quantized_linears and (t.role == "linear" or (litgpt and t.role == "lm_head")):
            if spec.method == "qlora":
                weights += alloc(t.numel / 2) * t.count
                quant += _quant4_state(t.numel, spec.quant_blocksize, spec.double_quant) * t.count
            else:  # LLM.int8: int8 weight + fp32 scale per output row (SCB)
                weights += alloc(t.numel) * t.count
                quant += alloc(4 * t.out_features) * t.count
            if t.role == "linear":  # a 4-bit lm_head is dequantized in the loss phase (core/litgpt.py)
                dequant = max(dequant, alloc(t.numel * w))
            if t.group == "attn":
                dequant_attn = max(dequant_attn, alloc(t.numel * w))
            continue
        # a quantized linear's bias goes back to the compute dtype on its first forward
        # (``bias.data = bias.data.to(x.dtype)`` in bitsandbytes' Linear4bit), fp32 or not before
        weights += alloc(t.numel * (dense if quantized_linears and t.role != "linear_bias" else w)) * t.count
        if spec.method == "full":
            trainable.append((t.numel, t.count, t.shape))
            if t.role in ("lm_head",) or (t.role == "norm" and t.name == "final_norm"):
                head_grads += alloc(t.numel * w) * t.count
            if t.role == "embedding":
                if t.name == "embed_tokens" and s.tied_embeddings and not reward:
                    # lm_head's backward makes it first; the embedding backward makes a second one
                    # and AccumulateGrad adds them out of place: two more V x h tensors (trace)
                    head_grads += alloc(t.numel * w)
                    embed_temp = 2 * alloc(t.numel * w)
                else:
                    embed_grads += alloc(t.numel * w) * t.count
            if spec.master_weights:
                master += alloc(t.numel * 4) * t.count
    if spec.method == "qlora" and spec.double_quant:
        quant += alloc(256 * 4)  # bitsandbytes' cached dynamic map, the source of the per-weight copies
    grad_bytes = w
    if spec.method != "full":
        a = DTYPE_BYTES[spec.adapter_dtype]
        grad_bytes = a
        chosen = () if litgpt else resolve_targets(s, spec.targets, spec.rank)
        tensors = lit.adapter_tensors(spec) if litgpt else adapter_tensors(s, chosen, spec.rank)
        for numel, count, shape, *_ in tensors:
            adapter += alloc(numel * a) * count
            trainable.append((numel, count, shape))
    o_name = module_names(s)["o"]

    def before_attention(t: ParamTensor) -> bool:
        return t.count % s.layers == 0 and (t.group == "mlp" or (t.group == "attn" and t.name == o_name))

    if spec.method == "full":
        early = sum(
            alloc(t.numel * grad_bytes) * (t.count // s.layers)
            for t in inventory(s)
            if t.role in ("linear", "linear_bias") and before_attention(t)
        )
    elif litgpt:
        early = sum(alloc(n * grad_bytes) * (count // s.layers) for n, count, _, made_early in tensors if made_early)
    else:
        early = sum(
            (alloc(spec.rank * t.in_features * grad_bytes) + alloc(t.out_features * spec.rank * grad_bytes))
            * (t.count // s.layers)
            for t in adapted(s, chosen)
            if before_attention(t)
        )
    layer_grads = 0
    for numel, count, _ in trainable:
        grads += alloc(numel * grad_bytes) * count
        if count % s.layers == 0:  # one (or more) per decoder layer
            layer_grads += alloc(numel * grad_bytes) * (count // s.layers)
    state_bytes = 4 if spec.master_weights else grad_bytes
    optimizer, pageable, step_temp = _optimizer(spec.optimizer, trainable, state_bytes)
    if spec.reference_kind == "copy":
        # TRL loads the reference with the policy's own init kwargs: the same weights and quantization
        # state again, frozen (a kbit-prepared policy's fp32 parts are 16-bit in the copy: over-planned)
        weights *= 2
        quant *= 2
    return StaticMemory(
        weights=weights,
        quant_state=quant,
        adapter=adapter,
        master_weights=master,
        gradients=grads,
        optimizer=optimizer,
        optimizer_pageable=pageable,
        optimizer_step_temp=step_temp,
        trainable_params=sum(n * c for n, c, _ in trainable),
        head_gradients=head_grads,
        embedding_gradients=embed_grads,
        layer_gradients=layer_grads,
        layer_gradients_before_attention=early,
        embedding_grad_temp=embed_temp,
        dequant_bytes=dequant,
        dequant_attn_bytes=dequant_attn,
    )


def quantized_inventory(s: ModelShape, experts_as_linears: bool) -> tuple[ParamTensor, ...]:
    """The inventory, with transformers 4.x's MoE layout when ``experts_as_linears``: every expert an
    ``nn.Module`` of ``nn.Linear`` w1 (gate, i x h), w3 (up, i x h) and w2 (down, h x i)
    (``MixtralBlockSparseTop2MLP``, transformers 4.48 ``modeling_mixtral.py``) and the router an
    ``nn.Linear(h, E)`` (``block_sparse_moe.gate``), all of which bitsandbytes' ``replace_with_bnb_linear``
    turns into 4-bit or 8-bit linears (only lm_head is kept out). transformers 5 holds the experts as
    two 3-D parameters per layer (``gate_up_proj`` E x 2i x h, ``down_proj`` E x h x i) and the router
    as a parameter, which it leaves in the weights' dtype."""
    tensors = inventory(s)
    if not experts_as_linears or not any(t.role in ("experts", "router") for t in tensors):
        return tensors
    out: list[ParamTensor] = []
    for t in tensors:
        if t.role == "router":
            out.append(records.replace(t, role="linear", in_features=t.shape[1], out_features=t.shape[0]))
        elif t.role == "experts":
            e, rows, cols = t.shape
            halves = 2 if t.name.endswith("gate_up_proj") else 1  # w1 and w3 stacked along the rows
            out_f = rows // halves
            out.append(ParamTensor(t.name, (out_f, cols), t.count * e * halves, "linear", t.group, cols, out_f))
        else:
            out.append(t)
    return tuple(out)


def _optimizer(name: str, trainable: list[tuple[int, int, tuple[int, ...]]], b: int) -> tuple[int, int, int]:
    """(state bytes, pageable part, step temporaries) for the trainable tensors.

    - adamw: torch fused AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype and a
      4-byte ``step`` tensor on the device per parameter (fused kernels need it there).
    - adamw_foreach: the same two moments; ``step`` is a CPU scalar (``torch.tensor(0.0)`` unless
      fused or capturable, ``Adam._init_group``). Its step (``_multi_tensor_adam``, torch/optim/adam.py;
      weight decay in place, ``torch._foreach_mul_(device_params, 1 - lr * weight_decay)``) builds
      ``exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)``: a new tensor per parameter, all
      of them at once, each the size of its second moment, in the state dtype. The grads are used in
      place (no ``maximize``), so that list is the step temporary: the state's second moment again.
      Parameters of several dtypes or devices are stepped group by group; the plan takes one group.
    - adamw8bit / paged_adamw8bit: bitsandbytes blockwise 8-bit state, two uint8 moments plus
      an fp32 absmax per 256 values, for tensors of at least 4096 elements; smaller tensors keep
      32-bit state. Paged variants put state of >= 1e5 elements in unified memory.
    - paged_adamw: bitsandbytes 32-bit AdamW, two fp32 moments, paged as above.
    - sgd: no state; sgd_momentum: one momentum buffer in the parameter's dtype.
    - adafactor: torch.optim.Adafactor, factored second moment (row and column vectors) for
      matrices, a full one for vectors; no first moment. Its step builds the full row x column
      estimate of one matrix at a time, which is the step temporary.
    """
    state = pageable = temp = 0
    for numel, count, shape in trainable:
        if name == "adamw":
            per = 2 * alloc(numel * b) + alloc(4)
        elif name == "adamw_foreach":
            per = 2 * alloc(numel * b)
            temp += alloc(numel * b) * count
        elif name in ("adamw8bit", "paged_adamw8bit"):
            if numel >= BNB_MIN_8BIT_SIZE:
                blocks = -(-numel // BNB_OPT_BLOCK)
                per = 2 * alloc(numel) + 2 * alloc(4 * blocks)
            else:
                per = 2 * alloc(numel * 4)
            if name.startswith("paged") and numel >= BNB_PAGE_MIN_NUMEL:
                pageable += 2 * alloc(numel) * count
        elif name == "paged_adamw":
            per = 2 * alloc(numel * 4)
            if numel >= BNB_PAGE_MIN_NUMEL:
                pageable += per * count
        elif name == "sgd":
            per = 0
        elif name == "sgd_momentum":
            per = alloc(numel * b)
        elif name == "adafactor":
            if len(shape) >= 2:
                rows = numel // shape[-1]
                cols = numel // shape[-2]
                per = alloc(rows * b) + alloc(cols * b)
                temp = max(temp, alloc(numel * b))
            else:
                per = alloc(numel * b)
        else:
            raise ValueError(f"unknown optimizer {name!r}")
        state += per * count
    if name in ("adamw8bit", "paged_adamw8bit"):
        state += 2 * alloc(256 * 4)  # the signed and unsigned dynamic quantization maps
    return state, pageable, temp
