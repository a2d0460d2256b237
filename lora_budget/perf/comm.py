"""Collective communication of data-parallel training: bytes on the wire per GPU and their time.

Symbols: N GPUs (``--gpus``), A micro-batches per optimizer step (``--grad-accum``); per GPU and
optimizer step. G = trainable parameters x gradient bytes (the dtype ``static_memory`` keeps the
trainable parameters and their gradients in: ``--dtype`` for full fine-tuning, ``--adapter-dtype``
for LoRA / QLoRA, whose frozen base weights have no gradient); W = the trainable parameters' bytes
(= G, same dtype); P = every parameter's stored bytes as sharding gathers them (16-bit weights,
4-bit QLoRA weights packed two per byte, adapters), split into the decoder layers' P_layers and the
root's P_root (embeddings, final norm, lm_head). Quantization state (absmax) is module state, not a
parameter: never communicated. FSDP2 pads each shard to ceil(d0 / N) rows; padding (< N rows per
tensor) is left out.

**Ring collectives** (nccl-tests ``doc/PERFORMANCE.md``, "bus bandwidth"): with payload S and a
per-GPU link bandwidth B, each GPU sends

- all-reduce: 2 (N-1)/N x S, time 2 (N-1)/N x S / B;
- all-gather, reduce-scatter: (N-1)/N x S each (S is the full, unsharded payload).

**Traffic per strategy** (per GPU, per optimizer step):

========  ===========================================================  ==================================
strategy  collectives                                                   overlaps with
========  ===========================================================  ==================================
ddp       all-reduce G once                                             the last micro-batch's backward
zero1     reduce-scatter G once, all-gather W after the step            nothing (exposed)
zero2     reduce-scatter G every micro-batch; all-gather W after step   backward; the all-gather: nothing
zero3     all-gather P forward and again backward, reduce-scatter G,    forward / backward of every
          every micro-batch                                             micro-batch
fsdp      all-gather P_root once, P_layers forward and backward,        forward / backward of every
          reduce-scatter G, every micro-batch                           micro-batch
========  ===========================================================  ==================================

Sources and assumptions:

- DDP with gradient accumulation: ``DistributedDataParallel.no_sync()`` "disable[s] DDP grad
  synchronization" inside the context (pytorch/pytorch#21736, which added it); the transformers
  Trainer and accelerate wrap all but the last micro-batch in it. So one all-reduce per step.
- ZeRO-1 installs no backward hooks, so its reduction cannot overlap the backward
  (microsoft/DeepSpeed#1246: "none of the backward hooks are triggered by stage 1, there is no
  overlapping"); it reduces at the accumulation boundary. ZeRO-2 reduces in backward hooks every
  micro-batch; we assume ``overlap_comm: true`` as the transformers DeepSpeed guide's ZeRO-2 example
  sets (DeepSpeed's own default is false: then the reduce-scatter adds to the step in full). ZeRO-1/2
  all-gather the updated trainable parameters after ``optimizer.step()``: exposed. ZeRO-3 fetches
  parameters before each module's forward and again before its backward (its persistence threshold,
  which keeps tiny tensors resident, is left out) and reduce-scatters every micro-batch.
- FSDP2 (torch docs, ``torch.distributed.fsdp.fully_shard``): "Before forward and backward passes,
  pre-forward/backward hooks are responsible for all-gathering the parameters"; the root module is not
  resharded after the forward (so gathered once); gradients are reduce-scattered every micro-batch
  (``set_requires_gradient_sync(False)``, FSDP2's ``no_sync``, would keep unsharded gradients, which
  the memory plan does not assume). With ``--grad-ckpt`` the recompute adds no all-gather: FSDP2's
  ``_pre_forward`` returns early in the pre-backward state ("the pre-backward hook is responsible for
  the unshard", torch 2.13 ``_fsdp_state.py``), so the layer gathered for its backward is reused.
- Offload rides the host PCIe link: ``--offload optimizer`` sends each GPU's gradient partition G / N
  down and its updated parameter partition W / N up once per step (exposed: it brackets the CPU step);
  ``--offload params`` copies each parameter shard up before every all-gather (P_gathered / N per
  micro-batch) and the reduced gradient shard G / N down (overlaps like the gathers it feeds).

**Links.** One GPU's ring bandwidth is its slowest hop. Inside a node (min(N, ``GPUS_PER_NODE``)
GPUs) that is NVLink (datasheet figure, both directions added, halved) when those GPUs fit in one
NVLink domain (8 behind NVSwitch, 2 on a bridge), else the card's PCIe x16 link; with N above
``GPUS_PER_NODE`` the ring also crosses nodes, and the network (``--inter-node-gbps`` per GPU,
default ``INTER_NODE_GBPS``, an assumption) bounds it when slower.
Every link runs at ``LINK_EFFICIENCY`` of its datasheet rate.

**Time.** comm_s is the sum of every collective's time. Overlap (the assumption, kept simple): a
micro-batch's forward gathers hide behind its forward compute, its backward gathers and gradient
reductions behind its backward compute (including the checkpoint recompute); what does not fit is
exposed: A x [max(0, fwd_comm - fwd_compute) + max(0, bwd_comm - bwd_compute)], plus DDP's
all-reduce beyond the last backward, plus the non-overlappable part. Compute windows are GEMM time
only (dequantization left out: a slight over-estimate of exposure).

Known error: per-collective latency (tens of microseconds, times a few hundred buckets and layers
per step) is left out; the first layer's gather and the last bucket's reduction cannot overlap in
practice; NVLink SHARP (H100/H200, NCCL's default all-reduce there) reaches a higher all-reduce rate
(~480 GB/s bus bandwidth on 8 H100, NVIDIA/nccl-tests#212) than the ring model; GeForce cards have
no peer-to-peer path, so NCCL stages through host memory, below the PCIe figure.
"""

from __future__ import annotations

from lora_budget.catalog.gpus import GPU
from lora_budget.core.lora import adapter_tensors, resolve_targets
from lora_budget.core.params import inventory
from lora_budget.core.static import static_memory
from lora_budget.records import dataclass
from lora_budget.spec import DTYPE_BYTES, TrainSpec

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


LINK_EFFICIENCY = 0.8
"""Achieved fraction of a link's datasheet bandwidth per direction. NVIDIA's NCCL maintainer on H100:
"450GB/s is the line rate. With the protocol overhead (~20%) NCCL can get an effective NVLink
bandwidth of 370GB/s" (NVIDIA/nccl-tests#212, 370 / 450 = 0.82); on A100, ~230 of 300 GB/s (0.77,
NVIDIA/nccl-tests#149). For PCIe and the network the same 0.8 is an assumption, not a measurement."""

GPUS_PER_NODE = 8
"""GPUs in one server (HGX / DGX boards and most PCIe servers); more GPUs cross the network."""

INTER_NODE_GBPS = 400.0
"""Assumed network bandwidth per GPU and direction between nodes, Gb/s: one 400 Gb/s InfiniBand NDR
(ConnectX-7) adapter per GPU, as in DGX H100. An assumption: pass --inter-node-gbps for your fabric."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """Bytes each GPU moves per optimizer step, by when they can overlap compute (no bandwidth yet)."""

    forward_bytes: int = 0
    """On the GPU-GPU link during each micro-batch's forward (all micro-batches together)."""
    backward_bytes: int = 0
    """On the GPU-GPU link during each micro-batch's backward (all micro-batches together)."""
    last_backward_bytes: int = 0
    """On the GPU-GPU link during the last micro-batch's backward only (DDP's all-reduce)."""
    exposed_bytes: int = 0
    """On the GPU-GPU link outside any compute (ZeRO-1's reduction, ZeRO-1/2's post-step all-gather)."""
    pcie_forward_bytes: int = 0
    """Host link, parameter offload: shards copied up before the forward gathers."""
    pcie_backward_bytes: int = 0
    """Host link, parameter offload: shards up before the backward gathers, gradient shards down."""
    pcie_exposed_bytes: int = 0
    """Host link, optimizer offload: gradient partition down, updated parameters up, once per step."""

    @property
    def link_bytes(self) -> int:
        return self.forward_bytes + self.backward_bytes + self.last_backward_bytes + self.exposed_bytes

    @property
    def pcie_bytes(self) -> int:
        return self.pcie_forward_bytes + self.pcie_backward_bytes + self.pcie_exposed_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommEstimate:
    """Communication of one optimizer step on one GPU of ``gpus``; times are None without link figures."""

    gpus: int
    traffic: Traffic
    link: str
    """The ring's slowest hop, in words ("NVLink", "PCIe Gen4 x16", "400 Gb/s network")."""
    link_bytes_per_s: int | None
    """That hop's datasheet bandwidth per direction (None: not recorded for this GPU)."""
    pcie_bytes_per_s: int | None
    """Host PCIe bandwidth per direction, for offload traffic."""
    comm_s: float | None
    """Every collective and offload copy of the step, end to end."""
    comm_exposed_s: float | None
    """The part compute does not hide: added to the step time."""
    note: str

    @property
    def comm_bytes(self) -> int:
        return self.traffic.link_bytes

    @property
    def offload_bytes(self) -> int:
        return self.traffic.pcie_bytes

    def to_dict(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "comm_bytes": self.comm_bytes,
            "offload_bytes": self.offload_bytes,
            "comm_s": self.comm_s,
            "comm_exposed_s": self.comm_exposed_s,
            "comm_link": self.link,
            "comm_link_bytes_per_s": self.link_bytes_per_s,
            "comm_efficiency": LINK_EFFICIENCY,
            "comm_forward_bytes": t.forward_bytes,
            "comm_backward_bytes": t.backward_bytes + t.last_backward_bytes,
            "comm_exposed_bytes": t.exposed_bytes,
        }


def _ring(n: int, payload: int, all_reduce: bool = False) -> int:
    """Bytes one GPU sends in a ring all-gather / reduce-scatter (or all-reduce) of ``payload`` bytes."""
    return (2 if all_reduce else 1) * (n - 1) * payload // n


def parameter_bytes(spec: TrainSpec) -> tuple[int, int]:
    """(P_layers, P_root): bytes of every parameter as sharding gathers it, decoder layers and root."""
    s = spec.model.shape
    w = DTYPE_BYTES[spec.dtype]
    layers = root = 0
    for t in inventory(s):
        if spec.method == "qlora" and t.role == "linear":
            nbytes = -(-t.numel // 2) * t.count  # Params4bit: two 4-bit weights per uint8
        elif spec.method == "lora8bit" and t.role == "linear":
            nbytes = t.numel * t.count
        else:
            nbytes = t.numel * w * t.count
        if t.role in ("embedding", "lm_head") or t.name == "final_norm":
            root += nbytes
        else:
            layers += nbytes
    if spec.method != "full":
        a = DTYPE_BYTES[spec.adapter_dtype]
        for numel, count, _ in adapter_tensors(s, resolve_targets(s, spec.targets, spec.rank), spec.rank):
            layers += numel * a * count
    return layers, root


def gradient_bytes(spec: TrainSpec) -> int:
    """G: trainable parameters x the bytes their gradients are kept in (unrounded, as buckets pack them)."""
    grad = DTYPE_BYTES[spec.dtype] if spec.method == "full" else DTYPE_BYTES[spec.adapter_dtype]
    return static_memory(spec).trainable_params * grad


def traffic(spec: TrainSpec) -> Traffic:
    """Per-GPU bytes of one optimizer step for ``spec.strategy`` on ``spec.gpus`` GPUs (all zero for one)."""
    n, a = spec.gpus, spec.grad_accum
    if n == 1:
        return Traffic()
    g = gradient_bytes(spec)
    w = g  # trainable parameters live in their gradients' dtype
    rs = _ring(n, g)
    strategy = spec.strategy
    if strategy == "ddp":
        return Traffic(last_backward_bytes=_ring(n, g, all_reduce=True))
    opt_offload = (g // n + w // n) if spec.offload == "optimizer" else 0
    if strategy == "zero1":
        return Traffic(exposed_bytes=rs + _ring(n, w), pcie_exposed_bytes=opt_offload)
    if strategy == "zero2":
        return Traffic(backward_bytes=a * rs, exposed_bytes=_ring(n, w), pcie_exposed_bytes=opt_offload)
    p_layers, p_root = parameter_bytes(spec)
    if strategy == "zero3":
        fwd = bwd = p_layers + p_root
    else:  # fsdp: the root stays unsharded from its forward through the backward
        fwd, bwd = p_layers + p_root, p_layers
    params_up = spec.offload == "params"
    return Traffic(
        forward_bytes=a * _ring(n, fwd),
        backward_bytes=a * (_ring(n, bwd) + rs),
        pcie_forward_bytes=a * fwd // n if params_up else 0,
        pcie_backward_bytes=a * (bwd // n + g // n) if params_up else 0,
        pcie_exposed_bytes=opt_offload,
    )


def ring_link(gpu: GPU, n: int, inter_node_gbps: float = INTER_NODE_GBPS) -> tuple[str, int | None]:
    """(the slowest hop of an N-GPU ring in words, its datasheet bandwidth per direction or None)."""
    in_node = min(n, GPUS_PER_NODE)  # the ring's hops inside one node
    if gpu.nvlink_bytes_per_s and gpu.nvlink_gpus and in_node <= gpu.nvlink_gpus:
        name, bw = "NVLink", gpu.nvlink_bytes_per_s
    elif gpu.pcie_bytes_per_s:
        name, bw = f"PCIe Gen{gpu.pcie_gen} x16", gpu.pcie_bytes_per_s
    else:
        return "no interconnect figure", None
    if n > GPUS_PER_NODE:
        net = round(inter_node_gbps * 10**9 / 8)
        if net < bw:
            name, bw = f"{inter_node_gbps:g} Gb/s network", net
    return name, bw


def estimate_comm(
    spec: TrainSpec,
    gpu: GPU,
    forward_s: float,
    backward_s: float,
    *,
    inter_node_gbps: float = INTER_NODE_GBPS,
) -> CommEstimate:
    """Bytes and time of ``spec``'s communication on ``gpu``; ``forward_s`` / ``backward_s`` are one
    micro-batch's compute, the windows that hide overlapping traffic."""
    t = traffic(spec)
    n, a = spec.gpus, spec.grad_accum
    link, bw = ring_link(gpu, n, inter_node_gbps)
    pcie = gpu.pcie_bytes_per_s
    if n == 1:
        return CommEstimate(
            gpus=1,
            traffic=t,
            link="",
            link_bytes_per_s=None,
            pcie_bytes_per_s=pcie,
            comm_s=0.0,
            comm_exposed_s=0.0,
            note="",
        )
    links = dict(gpus=n, traffic=t, link=link, link_bytes_per_s=bw, pcie_bytes_per_s=pcie)
    if bw is None or (t.pcie_bytes and not pcie):
        missing = "GPU-GPU link" if bw is None else "host PCIe link"
        note = (
            f"{n} GPUs: {gpu.name} has no {missing} figure in the catalog; communication time "
            f"({t.link_bytes / 1e9:,.2f} GB per GPU per step) is left out of the step time"
        )
        return CommEstimate(**links, comm_s=None, comm_exposed_s=None, note=note)
    eff = bw * LINK_EFFICIENCY
    host = (pcie or 1) * LINK_EFFICIENCY

    def secs(link_bytes: int, pcie_bytes: int = 0) -> float:
        return link_bytes / eff + pcie_bytes / host

    fwd = secs(t.forward_bytes, t.pcie_forward_bytes) / a
    bwd = secs(t.backward_bytes, t.pcie_backward_bytes) / a
    last = secs(t.last_backward_bytes)
    exposed = secs(t.exposed_bytes, t.pcie_exposed_bytes)
    comm_s = a * (fwd + bwd) + last + exposed
    hidden_fwd, hidden_bwd = max(0.0, fwd - forward_s), max(0.0, bwd - backward_s)
    exposed_s = a * (hidden_fwd + hidden_bwd) + max(0.0, last - max(0.0, backward_s - bwd)) + exposed
    where = "across nodes" if n > GPUS_PER_NODE else "in one node"
    note = (
        f"{n} GPUs {where}, {spec.strategy}: collectives over {link} ({bw / 1e9:,.0f} GB/s per direction, "
        f"{LINK_EFFICIENCY:.0%} of it achieved)"
        + (f", offload over PCIe Gen{gpu.pcie_gen}" if t.pcie_bytes else "")
        + "; comm rows are per GPU per optimizer step, the exposed part (not hidden by compute) is in the "
        "step time; tokens/s and cost count every GPU"
    )
    return CommEstimate(**links, comm_s=comm_s, comm_exposed_s=exposed_s, note=note)
