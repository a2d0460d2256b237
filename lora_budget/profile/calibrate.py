"""Fit the planner's overhead from stored GPU profiles, per GPU and software version.

For every successful CUDA row i, with P_i the planner's peak for the same spec (stored beside the
measurement), A_i the measured peak allocated, R_i the peak reserved and N_i NVML's process
memory, the gap between what the GPU needs and what the plan predicts splits into three terms:

- plan residual  r_i = A_i - P_i   tensor bytes the plan misses (e.g. cuBLAS workspaces, which
  the caching allocator hands out like any tensor);
- reserve        f_i = R_i - A_i   segments the caching allocator holds beyond live tensors
  (block rounding, 2 MiB / 20 MiB segments, fragmentation);
- context        c_i = N_i - R_i   memory outside the caching allocator: the CUDA context,
  kernel images, NCCL/cuBLAS handles.

The target T_i is N_i when every row of the group has NVML memory, else R_i (and the context is
then not part of the fit). The overhead is the constant that minimises sum (T_i - P_i - o)^2,
i.e. the mean o = mean(T_i - P_i) = mean(r) + mean(f) [+ mean(c)] (the mean is linear, so the
terms add up to the overhead exactly). The error bar is the largest |T_i - P_i - o| of the fit.

Groups: (GPU name as CUDA reports it, torch major.minor, CUDA version): a new driver or PyTorch
changes the context and the allocator, so each keeps its own entry.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from lora_budget.catalog import calibration
from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.profile.store import Profile
from lora_budget.records import asdict, dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """The overhead of one GPU and software version, fitted from ``rows`` configurations."""

    gpu_name: str
    catalog_gpu: str | None
    """The catalog card this device is (``plan --gpu`` uses the entry for it), None if unknown."""
    torch: str | None
    cuda: str | None
    driver: str | None
    rows: int
    target: str
    """nvml (process memory, context included) or reserved (no NVML data)."""
    residual_bytes: int
    reserve_bytes: int
    context_bytes: int | None
    overhead_bytes: int
    error_bytes: int
    """max |T_i - P_i - overhead| over the rows."""
    median_abs_error_bytes: int
    plan_vs_allocated_median_pct: float
    """median |A_i - P_i| / A_i, in percent: the uncalibrated plan against tensor bytes."""
    plan_vs_allocated_worst_pct: float
    calibrated_median_pct: float
    """median |T_i - P_i - overhead| / T_i, in percent."""
    files: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.gpu_name, self.torch, self.cuda)


@dataclass(slots=True)
class Fit:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Why profiles or rows did not take part (CPU profiles, failed rows)."""


def _minor(version: str | None) -> str | None:
    if not version:
        return None
    return ".".join(version.split("+")[0].split(".")[:2])


CUDA_NAMES = {"NVIDIA H100 80GB HBM3": "H100 SXM"}
"""Device names CUDA reports that the catalog's card names and aliases do not match (the SXM5
H100 reports its memory type instead of its form factor)."""


def _card(gpu_name: str) -> str | None:
    from lora_budget.catalog.gpus import resolve_gpu

    try:
        card = resolve_gpu(CUDA_NAMES.get(gpu_name, gpu_name))
    except LoraBudgetError:
        return None
    return None if card.from_size else card.name


def fit(profiles: list[Profile], card: str | None = None) -> Fit:
    """One Entry per (GPU, torch minor, CUDA) group of successful CUDA rows.

    ``card``: the catalog card of the profiled GPU when its CUDA name does not resolve to one.
    """
    out = Fit()
    groups: dict[tuple[str, str | None, str | None], list[tuple[dict[str, Any], Profile]]] = {}
    for profile in profiles:
        env = profile.environment
        if env.get("device") != "cuda" or not env.get("gpu_name"):
            out.skipped.append(f"{profile.path}: a CPU profile has no GPU overhead to fit")
            continue
        key = (env["gpu_name"], _minor(env["versions"].get("torch")), env.get("cuda_version"))
        for row in profile.rows:
            if row["status"] != "ok" or row.get("counter") != "cuda" or row.get("peak_reserved_bytes") is None:
                out.skipped.append(f"{profile.path}: a row with status {row['status']} is not fitted")
                continue
            groups.setdefault(key, []).append((row, profile))
    if card is not None and len({k[0] for k in groups}) > 1:
        raise LoraBudgetError("--card names one catalog card, but the profiles come from several GPUs")
    for (gpu_name, torch_version, cuda), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        out.entries.append(_fit_group(gpu_name, torch_version, cuda, members, card))
    return out


def _fit_group(gpu_name: str, torch_version: str | None, cuda: str | None, members: list, card: str | None) -> Entry:
    rows = [row for row, _ in members]
    nvml = all(row.get("nvml_process_bytes") is not None for row in rows)
    predicted = [row["predicted_peak_bytes"] for row in rows]
    allocated = [row["peak_allocated_bytes"] for row in rows]
    reserved = [row["peak_reserved_bytes"] for row in rows]
    target = [row["nvml_process_bytes"] for row in rows] if nvml else reserved
    overhead = statistics.fmean(t - p for t, p in zip(target, predicted, strict=True))
    residuals = [t - p - overhead for t, p in zip(target, predicted, strict=True)]
    plan_err = [abs(a - p) / a * 100 for a, p in zip(allocated, predicted, strict=True)]
    cal_err = [abs(e) / t * 100 for e, t in zip(residuals, target, strict=True)]
    drivers = sorted({str(p.environment.get("driver_version")) for _, p in members})
    return Entry(
        gpu_name=gpu_name,
        catalog_gpu=card or _card(gpu_name),
        torch=torch_version,
        cuda=cuda,
        driver=", ".join(drivers),
        rows=len(rows),
        target="nvml" if nvml else "reserved",
        residual_bytes=round(statistics.fmean(a - p for a, p in zip(allocated, predicted, strict=True))),
        reserve_bytes=round(statistics.fmean(r - a for r, a in zip(reserved, allocated, strict=True))),
        context_bytes=round(statistics.fmean(t - r for t, r in zip(target, reserved, strict=True))) if nvml else None,
        overhead_bytes=round(overhead),
        error_bytes=math.ceil(max(abs(e) for e in residuals)),
        median_abs_error_bytes=round(statistics.median(abs(e) for e in residuals)),
        plan_vs_allocated_median_pct=round(statistics.median(plan_err), 3),
        plan_vs_allocated_worst_pct=round(max(plan_err), 3),
        calibrated_median_pct=round(statistics.median(cal_err), 3),
        files=sorted({str(p.path) for _, p in members}),
    )


def write(entries: list[Entry], path: Path = calibration.PATH) -> tuple[int, int]:
    """Merge ``entries`` into the calibration file atomically; (replaced, added) entry counts.

    Entries of other GPUs or versions already in the file are kept.
    """
    data = calibration.read(path)
    new = {(e.gpu_name, e.torch, e.cuda): asdict(e) for e in entries}
    kept = [old for old in data["entries"] if (old.get("gpu_name"), old.get("torch"), old.get("cuda")) not in new]
    replaced = len(data["entries"]) - len(kept)
    data["entries"] = kept + list(new.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return replaced, len(new) - replaced
