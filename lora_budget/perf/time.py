"""Step time, tokens per second, wall time and cost of a fine-tuning job.

One optimizer step runs ``grad_accum`` micro-batches of b x s tokens, then the optimizer:

    step_s = grad_accum * (compute_s + dequant_s) + optimizer_s + comm_exposed_s
    compute_s   = executed FLOPs of a micro-batch / (utilization * peak 16-bit FLOP/s)
    dequant_s   = dequantization bytes of a micro-batch / memory bandwidth      (QLoRA, 8-bit LoRA)
    optimizer_s = optimizer bytes / memory bandwidth
    comm_exposed_s = collective traffic compute does not hide (N > 1; 0 on one GPU)
    tokens_per_s = N * b * s * grad_accum / step_s              (N data-parallel GPUs, --gpus)
    wall_s = total tokens / tokens_per_s,   cost_usd = N * wall_s / 3600 * price per GPU-hour

With N > 1 the bytes each GPU sends per step (gradient all-reduce / reduce-scatter, parameter
all-gathers, offload copies) and the part of their time that forward / backward compute cannot hide
come from :mod:`lora_budget.perf.comm`, which states the derivation and its overlap assumption.

FLOPs come from :mod:`lora_budget.perf.flops`, the utilization from
:func:`lora_budget.perf.utilization.mfu_for`, peak FLOP/s and bandwidth from ``gpus.json``.

The optimizer step is memory-bound: it reads and writes every trainable weight, master weight and
optimizer state byte and reads every gradient once, i.e. 2 * (trainable weights + master weights
+ optimizer state) + gradients bytes (fused AdamW, bitsandbytes 8-bit Adam and SGD all make one
pass). Memory-bound terms assume the datasheet bandwidth, so they are lower bounds: real kernels
reach roughly 70-90 % of it. Where a GPU has no bandwidth figure they are left out, with a note.

fp32 steps are refused: the catalog records 16-bit tensor-core peaks only, and fp32 (or TF32)
throughput differs by up to 16x between cards; a bare memory size (``--gpu 24GB``) has no
throughput at all. Both give ``step_s = None`` and a note saying why.
"""

from __future__ import annotations

from lora_budget.catalog.gpus import GPU
from lora_budget.core.static import static_memory
from lora_budget.perf.comm import INTER_NODE_GBPS, CommEstimate, estimate_comm, traffic
from lora_budget.perf.flops import StepFlops, step_flops
from lora_budget.perf.utilization import mfu_for
from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeEstimate:
    """Speed of one spec on one GPU; time fields are None when they cannot be estimated (see ``note``)."""

    flops: StepFlops
    """FLOPs and dequantization bytes of one micro-batch."""
    tokens_per_step: int
    """b * s * grad_accum."""
    optimizer_bytes: int
    """Memory traffic of one optimizer step."""
    utilization: float
    utilization_source: str
    peak_flops_per_s: float | None = None
    """Peak dense FLOP/s for the spec's dtype (None: unknown for this GPU / dtype)."""
    compute_s: float | None = None
    """GEMM time of one micro-batch."""
    memory_s: float | None = None
    """Dequantization time of one micro-batch plus the optimizer step, at datasheet bandwidth."""
    step_s: float | None = None
    """One optimizer step (all micro-batches)."""
    tokens_per_s: float | None = None
    mfu: float | None = None
    """Model FLOPs utilization this implies: model FLOPs / (step time x peak)."""
    total_tokens: int | None = None
    wall_s: float | None = None
    price_usd_per_h: float | None = None
    price_source: str = ""
    cost_usd: float | None = None
    comm_bytes: int = 0
    """Bytes each GPU sends over the GPU-GPU link per optimizer step (0 on one GPU)."""
    offload_bytes: int = 0
    """Bytes each GPU moves over its host PCIe link per optimizer step (--offload)."""
    comm_s: float | None = None
    """Time of all that traffic per step (None: no link figure, or no speed at all)."""
    comm_exposed_s: float | None = None
    """The part of ``comm_s`` compute does not hide: included in ``step_s``."""
    comm: CommEstimate | None = None
    """The communication estimate behind the three fields above (None on one GPU or without speed)."""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        f = self.flops
        return {
            "flops_per_step": f.total_flops * self.tokens_per_step // f.tokens,
            "model_flops_per_step": f.model_flops * self.tokens_per_step // f.tokens,
            "recompute_flops_per_step": f.recompute_flops * self.tokens_per_step // f.tokens,
            "dequant_bytes_per_step": f.dequant_bytes * self.tokens_per_step // f.tokens,
            "optimizer_bytes_per_step": self.optimizer_bytes,
            "tokens_per_step": self.tokens_per_step,
            "peak_flops_per_s": self.peak_flops_per_s,
            "utilization": self.utilization,
            "utilization_source": self.utilization_source,
            "mfu": self.mfu,
            "compute_s": self.compute_s,
            "memory_s": self.memory_s,
            "price_usd_per_h": self.price_usd_per_h,
            "price_source": self.price_source,
            **(self.comm.to_dict() if self.comm else {}),
            **(
                {"comm_bytes": self.comm_bytes, "offload_bytes": self.offload_bytes}
                if self.comm is None and self.comm_bytes
                else {}
            ),
            "notes": list(self.notes),
        }


def peak_flops_per_s(gpu: GPU, dtype: str) -> tuple[float | None, str]:
    """(peak dense FLOP/s for ``dtype`` on ``gpu``, or None and why)."""
    if gpu.from_size:
        return None, (
            f"no speed for --gpu {gpu.name}: a bare memory size has no throughput; name a card "
            "(e.g. --gpu rtx4090, l4, a10g, h100) for tokens/s, time and cost"
        )
    if dtype == "fp32":
        return None, (
            "no speed for --dtype fp32: the catalog records 16-bit tensor-core peaks only "
            "(fp32/TF32 throughput varies up to 16x by card); plan bf16 or fp16 for an estimate"
        )
    tflops = gpu.peak_bf16_tflops if dtype == "bf16" else gpu.peak_fp16_tflops
    if tflops is None:
        return None, f"no speed: {gpu.name} has no {dtype} tensor-core peak (use --dtype fp16)"
    return tflops * 1e12, ""


def optimizer_bytes(spec: TrainSpec) -> int:
    """Memory traffic of one optimizer step: 2 x (trainable weights + master + state) + gradients."""
    st = static_memory(spec)
    trainable = st.weights if spec.method == "full" else st.adapter
    return 2 * (trainable + st.master_weights + st.optimizer) + st.gradients


def estimate_time(
    spec: TrainSpec,
    gpu: GPU,
    *,
    total_tokens: int | None = None,
    price_usd_per_h: float | None = None,
    calibration: Any = None,
    inter_node_gbps: float = INTER_NODE_GBPS,
) -> TimeEstimate:
    """Step time, tokens/s and, given ``total_tokens`` (and a price), wall time and cost; with
    ``spec.gpus`` > 1 the collectives' bytes and the time compute does not hide (``inter_node_gbps``:
    network bandwidth per GPU beyond one node)."""
    flops = step_flops(spec)
    tokens_per_step = flops.tokens * spec.grad_accum * spec.gpus  # every GPU runs its own micro-batches
    opt_bytes = optimizer_bytes(spec)
    util, util_source = mfu_for(gpu.name, spec.method, calibration)
    peak, why = peak_flops_per_s(gpu, spec.dtype)
    moved = traffic(spec)
    base = dict(
        flops=flops,
        tokens_per_step=tokens_per_step,
        optimizer_bytes=opt_bytes,
        utilization=util,
        utilization_source=util_source,
        total_tokens=total_tokens,
        comm_bytes=moved.link_bytes,
        offload_bytes=moved.pcie_bytes,
    )
    if peak is None:
        return TimeEstimate(**base, notes=(why,))
    notes: list[str] = []
    compute_s = flops.total_flops / (util * peak)
    bandwidth = gpu.memory_bandwidth_bytes_per_s
    if bandwidth:
        dequant_s = flops.dequant_bytes / bandwidth
        opt_s = opt_bytes / bandwidth
    else:
        dequant_s = opt_s = 0.0
        notes.append(f"{gpu.name} has no bandwidth figure in the catalog: dequantization and optimizer time left out")
    comm = None
    exposed_s = 0.0
    if spec.gpus > 1:
        forward_s = compute_s * flops.forward_flops / flops.total_flops
        comm = estimate_comm(spec, gpu, forward_s, compute_s - forward_s, inter_node_gbps=inter_node_gbps)
        exposed_s = comm.comm_exposed_s or 0.0
        notes.append(comm.note)
    step_s = spec.grad_accum * (compute_s + dequant_s) + opt_s + exposed_s
    tokens_per_s = tokens_per_step / step_s
    mfu = flops.model_flops * spec.grad_accum / (step_s * peak)
    wall_s = total_tokens / tokens_per_s if total_tokens is not None else None
    if price_usd_per_h is None and gpu.price_usd_per_hour is not None:
        price_usd_per_h, price_source = gpu.price_usd_per_hour, gpu.price_source
    else:
        price_source = "--price" if price_usd_per_h is not None else ""
    cost = wall_s / 3600 * price_usd_per_h * spec.gpus if (wall_s is not None and price_usd_per_h is not None) else None
    if wall_s is not None and price_usd_per_h is None:
        notes.append(f"no price for {gpu.name} in the catalog: pass --price USD/h for a cost")
    return TimeEstimate(
        **base,
        peak_flops_per_s=peak,
        compute_s=spec.grad_accum * compute_s,
        memory_s=spec.grad_accum * dequant_s + opt_s,
        step_s=step_s,
        tokens_per_s=tokens_per_s,
        mfu=mfu,
        wall_s=wall_s,
        price_usd_per_h=price_usd_per_h,
        price_source=price_source,
        cost_usd=cost,
        comm_s=comm.comm_s if comm else None,
        comm_exposed_s=comm.comm_exposed_s if comm else None,
        comm=comm,
        notes=tuple(notes),
    )
