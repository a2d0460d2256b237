"""Printing trace results beside the plan."""

from __future__ import annotations

from typing import Any

from lora_budget.breakdown import CATEGORIES
from lora_budget.cli.render import LABELS
from lora_budget.core.params import param_count
from lora_budget.units import GiB


def _step_line(spec: Any) -> str:
    parts = [f"batch {spec.batch_size}", f"seq {spec.seq_len}", spec.dtype, spec.optimizer, f"attn {spec.attn}"]
    parts.append("grad-ckpt" if spec.grad_ckpt else "no grad-ckpt")
    if spec.grad_accum > 1:
        parts.append(f"accum {spec.grad_accum}")
    return ", ".join(parts)


def _plan(planned: Any, attr: str, w: int) -> str:
    """One plan cell in GiB; ``-`` where the planner does not model the spec (``planned`` None)."""
    return f"{'-':>{w}}" if planned is None else f"{getattr(planned, attr) / GiB:>{w}.3f}"


def render_trace(ref: Any, rows: list[tuple[Any, Any]]) -> str:
    """rows: (TraceResult, planned Breakdown or None where the planner does not model the spec) per method."""
    n = param_count(ref.shape)
    lines = [
        f"Model  {ref.name} ({n / 1e9:.2f}B parameters)"
        if n >= 1e9
        else f"Model  {ref.name} ({n / 1e6:.1f}M parameters)",
        f"Step   {_step_line(rows[0][0].spec)}",
        "",
    ]
    spec = rows[0][0].spec
    if spec.gpus > 1:
        lines.insert(
            -1,
            f"GPUs   rank 0 of {spec.gpus}, {spec.strategy} (FSDP2 on a fake process group): bytes are per GPU",
        )
    w = 10
    head = f"{'memory (GiB)':<14}" + "".join(
        f"{LABELS[r.spec.method] + ' trace':>{w + 4}}{'plan':>{w}}" for r, _ in rows
    )
    lines += [head, "-" * len(head)]
    for cat in CATEGORIES:
        if not any(getattr(r.breakdown, cat) or (p is not None and getattr(p, cat)) for r, p in rows):
            continue
        lines.append(
            f"{cat:<14}" + "".join(f"{getattr(r.breakdown, cat) / GiB:>{w + 4}.3f}{_plan(p, cat, w)}" for r, p in rows)
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'peak':<14}" + "".join(f"{r.peak_bytes / GiB:>{w + 4}.3f}{_plan(p, 'peak_bytes', w)}" for r, p in rows)
    )
    lines.append(
        f"{'plan error':<14}"
        + "".join(
            f"{'':>{w + 4}}"
            + (f"{'-':>{w}}" if p is None else f"{(p.peak_bytes / r.peak_bytes - 1) * 100:>+{w - 1}.2f}%")
            for r, p in rows
        )
    )
    lines.append(
        f"{'peak during':<14}" + "".join(f"{r.breakdown.phase:>{w + 4}}{p.phase if p else '-':>{w}}" for r, p in rows)
    )
    if all(r.reserved is not None for r, _ in rows):
        lines.append(
            f"{'cuda alloc':<14}" + "".join(f"{r.reserved.peak_allocated / GiB:>{w + 4}.3f}{'':>{w}}" for r, _ in rows)
        )
        lines.append(
            f"{'reserved':<14}" + "".join(f"{r.reserved.peak_reserved / GiB:>{w + 4}.3f}{'':>{w}}" for r, _ in rows)
        )
    lines.append("")
    for r, _ in rows:
        where = f"{r.peak_op} in {r.peak_module}" if r.peak_module else r.peak_op
        paged = f"; {r.paged_bytes / GiB:.2f} GiB of optimizer state is paged" if r.paged_bytes else ""
        lines.append(
            f"{LABELS[r.spec.method]}: peak {r.peak_bytes:,} bytes at {where} ({r.breakdown.phase}); "
            f"{r.ops:,} ops traced in {r.wall_s:.1f} s{paged}"
        )
    lines.append("")
    lines.append(
        "trace: the real transformers/peft/bitsandbytes step on fake tensors, storages rounded to the CUDA "
        "allocator's 512-byte blocks; CUDA context and fragmentation are not tensors and are not included"
    )
    if all(r.reserved is not None for r, _ in rows):
        lines.append(
            "cuda alloc, reserved: the step's allocations and frees replayed through a model of the CUDA caching "
            "allocator (max_memory_allocated counts unsplit block remainders; max_memory_reserved its segments); "
            "compared with published reserved and nvidia-smi figures in reports/reserved.md, not yet with a GPU profile"
        )
    return "\n".join(lines)
