"""Synthetic profiles for store and calibration tests (no torch): every number is chosen here."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lora_budget.catalog.models import resolve_model
from lora_budget.profile.specio import model_to_dict, spec_to_dict
from lora_budget.profile.store import Profile
from lora_budget.spec import TrainSpec

TINY = Path(__file__).parent / "data" / "tiny-llama" / "config.json"


def environment(device: str = "cuda", gpu: str = "NVIDIA A100-SXM4-80GB", torch: str = "2.13.0+cu128") -> dict:
    return {
        "device": device,
        "gpu_name": gpu if device == "cuda" else None,
        "gpu_memory_bytes": 85_899_345_920 if device == "cuda" else None,
        "gpu_capability": "8.0" if device == "cuda" else None,
        "driver_version": "570.00" if device == "cuda" else None,
        "cuda_version": "12.8" if device == "cuda" else None,
        "cpu": "x86_64",
        "python": "3.12.0",
        "platform": "Linux",
        "versions": {"torch": torch, "transformers": "5.23.0", "peft": "0.21.2", "bitsandbytes": "0.50.2"},
    }


def row(
    *,
    predicted: int,
    allocated: int | None = None,
    reserved: int | None = None,
    nvml: int | None = None,
    status: str = "ok",
    batch_size: int = 1,
    method: str = "lora",
) -> dict[str, Any]:
    spec = TrainSpec(model=resolve_model(str(TINY)), method=method, batch_size=batch_size, seq_len=64)
    return {
        "spec": spec_to_dict(spec),
        "status": status,
        "counter": "cuda",
        "peak_allocated_bytes": allocated,
        "peak_reserved_bytes": reserved,
        "peak_active_bytes": allocated,
        "alloc_retries": 0,
        "ooms": 0 if status == "ok" else 1,
        "nvml_process_bytes": nvml,
        "peak_phase": "",
        "step_s": 0.5 if status == "ok" else None,
        "step_times_s": [0.5] if status == "ok" else [],
        "tokens_per_s": 128.0 if status == "ok" else None,
        "losses": [5.5, 5.0] if status == "ok" else [],
        "snapshot": None,
        "error": "" if status == "ok" else "CUDA out of memory. Tried to allocate 2.00 GiB",
        "wall_s": 1.0,
        "predicted_peak_bytes": predicted,
        "predicted_phase": "backward",
        "predicted": {"weights": predicted},
    }


def profile(rows: list[dict], env: dict | None = None, created: str = "2026-11-22T12:00:00Z") -> Profile:
    return Profile(
        environment=copy.deepcopy(env or environment()),
        model=model_to_dict(resolve_model(str(TINY))),
        settings={"device": "cuda", "steps": 5, "warmup": 2, "lr": 1e-3, "seed": 0, "snapshot": None, "data": "x"},
        rows=rows,
        created_utc=created,
        planned=len(rows),
    )
