"""The shared vocabulary of every engine: bytes per memory category at the peak."""

from __future__ import annotations

from lora_budget.records import dataclass, fields

CATEGORIES: tuple[str, ...] = (
    "weights",
    "quant_state",
    "adapter",
    "master_weights",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "temporaries",
    "overhead",
)

CATEGORY_HELP: dict[str, str] = {
    "weights": "base weights in their storage dtype (16-bit, int8 or packed 4-bit)",
    "quant_state": "quantization metadata: absmax, nested absmax, code tables",
    "adapter": "LoRA A/B weights",
    "master_weights": "fp32 master copies kept by mixed precision",
    "gradients": "gradients of the trainable parameters",
    "optimizer": "optimizer state (Adam moments, 8-bit state + absmax, momentum, ...)",
    "activations": "tensors saved for backward",
    "logits": "output logits and the loss's fp32 copies and gradients",
    "temporaries": "transient working memory at the peak (dequantized weights, backward scratch)",
    "overhead": "CUDA context, cuBLAS workspace, allocator reserve (from calibration)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Breakdown:
    """Integer bytes per category at the step's peak; the categories sum to ``peak_bytes``."""

    weights: int = 0
    quant_state: int = 0
    adapter: int = 0
    master_weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    logits: int = 0
    temporaries: int = 0
    overhead: int = 0
    phase: str = ""
    """Where in the step the peak happens: forward, loss, backward, optimizer."""

    def __post_init__(self) -> None:
        for name in CATEGORIES:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int of bytes, got {value!r}")
        assert sum(self.as_dict().values()) == self.peak_bytes

    @property
    def peak_bytes(self) -> int:
        return sum(getattr(self, name) for name in CATEGORIES)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in CATEGORIES}


assert tuple(f.name for f in fields(Breakdown) if f.name != "phase") == CATEGORIES
