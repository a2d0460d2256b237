"""One-line descriptions of a spec, shared by the CLI's tables and the report (neither imports the other)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from lora_budget.spec import TrainSpec


def spec_settings(s: TrainSpec) -> str:
    """``batch 1, seq 2048, bf16, adamw, attn sdpa, no grad-ckpt, r=16 all-linear``: the step's settings."""
    parts = [f"batch {s.batch_size}", f"seq {s.seq_len}"]
    if s.grad_accum > 1:
        parts.append(f"accum {s.grad_accum}")
    ckpt = ("grad-ckpt offloaded" if s.ckpt_offload else "grad-ckpt") if s.grad_ckpt else "no grad-ckpt"
    parts += [s.dtype, s.optimizer, f"attn {s.attn}", ckpt]
    if s.activation_offload:
        parts.append("activations offloaded")
    if s.method != "full":
        parts.append(f"r={s.rank} {s.targets}")
        if s.lora_dropout:
            parts.append(f"dropout {s.lora_dropout:g}")
        if s.kbit_prepared:
            parts.append("kbit-prep (fp32 non-quantized weights)")
    return ", ".join(parts)
