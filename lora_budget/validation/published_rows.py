"""The records of the published-measurements check: one compared row, one summary line.

Kept apart from ``published`` (which computes them) and ``published_render`` (which writes them)
so that neither of those imports the other.
"""

from __future__ import annotations

from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedRow:
    """One published figure, what the planner says for it, and why the two may differ."""

    id: int
    source: str
    """torchtune, peft, transformers-docs, litgpt or fms-acceleration: the publication."""
    framework: str
    """The training stack that ran (``published_map.framework_key``): plain, hf-trainer, litgpt, torchtune."""
    mechanisms: tuple[tuple[str, str], ...]
    """(column, value) of the row's recorded mechanisms (``published_map.MECHANISM_COLUMNS``) that are stated."""
    model: str
    """The model as the source names it."""
    method: str
    batch_size: int | None
    seq_len: int | None
    grad_ckpt: str
    """yes, no, or ? where the source does not say."""
    metric: str
    """allocated, unstated, reserved or nvidia-smi (see ``published_map.metric_kind``)."""
    outcome: str
    """measured or OOM."""
    reliability: str
    gpu: str
    published_bytes: int | None
    spec: TrainSpec | None
    reasons: tuple[str, ...]
    """Why the row has no spec; empty when it has one."""
    caveats: tuple[str, ...]
    material: bool
    """A caveat changes the peak materially."""
    plan_bytes: int | None
    """The planner's peak as torch's allocator sees it: ``peak_bytes`` less paged optimizer state."""
    paged_bytes: int | None
    plan_phase: str
    gpu_fits: bool | None
    """Whether the plan fits the stated GPU (None: GPU not stated or not in the catalog)."""

    @property
    def usable(self) -> bool:
        return self.spec is not None

    @property
    def error_pct(self) -> float | None:
        """(plan - published) / published in percent, for allocated and unstated figures."""
        if self.metric not in ("allocated", "unstated") or not self.plan_bytes or not self.published_bytes:
            return None
        return 100.0 * (self.plan_bytes - self.published_bytes) / self.published_bytes

    @property
    def gap_bytes(self) -> int | None:
        """published - plan for reserved and nvidia-smi figures: allocator reserve (+ CUDA context)."""
        if self.metric not in ("reserved", "nvidia-smi") or self.plan_bytes is None or self.published_bytes is None:
            return None
        return self.published_bytes - self.plan_bytes

    @property
    def in_summary(self) -> bool:
        """Counted in the allocated-error summary: a clean allocated figure of a measured run."""
        return (
            self.usable
            and self.metric == "allocated"
            and self.outcome == "measured"
            and self.reliability != "low"
            and not self.material
        )


@dataclass(frozen=True, slots=True)
class SummaryLine:
    group: str
    method: str
    n: int
    median_abs_pct: float
    worst_abs_pct: float
    worst_id: int
    median_pct: float
    """Median signed error: negative means the planner says less than the run allocated."""
    within_10: float
    """Share of the rows (0-1) whose error is within +-10 %."""
