"""The planner's entry points: the peak model of a spec, on one GPU or per GPU of several.

``core.peak`` builds the single-GPU model and ``core.sharding`` derives the per-GPU one from it;
this module chooses between them, so neither of the two imports the other back.
"""

from __future__ import annotations

from functools import lru_cache

from lora_budget.breakdown import Breakdown
from lora_budget.core.peak import PeakModel, single_peak_model
from lora_budget.core.sharding import shard_peak_model
from lora_budget.core.static import StepKey
from lora_budget.spec import TrainSpec


def peak_model(spec: TrainSpec, overhead_bytes: int = 0) -> PeakModel:
    """Everything about ``spec`` that does not depend on batch and sequence; per GPU for several."""
    model = single_peak_model(spec, overhead_bytes)
    return shard_peak_model(model) if spec.gpus > 1 else model


def shared_peak_model(spec: TrainSpec, overhead_bytes: int = 0) -> PeakModel:
    """``peak_model(spec)``, shared by every spec that differs from ``spec`` only in micro-batch and
    sequence length (``StepKey``). Its ``spec`` is the first such spec seen, so evaluate it at the
    caller's own b and s (``breakdown(b, s)``, ``fit_bytes(b, s)``) and read the spec from the caller."""
    return _shared_peak_model(StepKey(spec), overhead_bytes)


@lru_cache(maxsize=4096)
def _shared_peak_model(key: StepKey, overhead_bytes: int) -> PeakModel:
    return peak_model(key.spec, overhead_bytes)


def estimate(spec: TrainSpec, overhead_bytes: int = 0) -> Breakdown:
    """Peak breakdown of one training step of ``spec``."""
    return peak_model(spec, overhead_bytes).breakdown(spec.batch_size, spec.seq_len)
