"""How much of a GPU's peak tensor throughput a fine-tuning step reaches: ``mfu_for(gpu, method)``.

The factor multiplies the GPU's peak dense 16-bit TFLOP/s (``gpus.json``) to give the FLOP rate at
which :mod:`lora_budget.perf.time` runs the *executed* FLOPs of :mod:`lora_budget.perf.flops`
(recomputation included), so it is a hardware-FLOPs utilization; without gradient checkpointing and
FlashAttention's in-kernel recompute it equals model FLOPs utilization (MFU, PaLM appendix B).

**The defaults below are assumptions, not measurements.** They stand until real-GPU profiles
calibrate them (``lora-budget profile`` / ``calibrate``). Their reasoning:

- full, 0.40: large, tuned pretraining runs report 46.2 % MFU (PaLM 540B on TPU v4, Chowdhery et
  al. 2022, table 3) and about 52 % of peak with recomputation (Megatron-LM on A100, Narayanan et
  al. 2021, section 5.1). A single-GPU Hugging Face loop with micro-batch 1-8 has smaller GEMMs and
  more Python and elementwise overhead, so we assume less.
- lora / qlora, 0.35: the same large frozen GEMMs, plus many small rank-r adapter GEMMs and peft's
  casts, which run far below peak. QLoRA's dequantization is *not* in this factor: it is timed
  separately as memory traffic.
- lora8bit, 0.20: LLM.int8 multiplies with outlier decomposition and quantizes activations on the
  fly; bitsandbytes documents it as slower than 16-bit training (Dettmers et al. 2022, section 5).

A calibration, when it exists, is a mapping ``{(gpu_name, method): utilization}`` fitted from
profiles; pass it as ``calibration=`` (the profile store will supply it), and it wins over defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_UTILIZATION: dict[str, float] = {"full": 0.40, "lora": 0.35, "qlora": 0.35, "lora8bit": 0.20}

DEFAULT_SOURCE = (
    "assumed default for {method} (lora_budget/perf/utilization.py), not yet calibrated from profiles of this GPU"
)


def mfu_for(gpu: str, method: str, calibration: Mapping[tuple[str, str], float] | None = None) -> tuple[float, str]:
    """(utilization in (0, 1], where it comes from) for ``method`` on the card named ``gpu``.

    Most specific first: a calibrated (gpu, method) entry, then the per-method default.
    """
    if calibration:
        value = calibration.get((gpu, method))
        if value is not None:
            if not 0 < value <= 1:
                raise ValueError(f"calibrated utilization for {gpu} / {method} must be in (0, 1], got {value}")
            return float(value), f"calibrated from profiles of {gpu} ({method})"
    if method not in DEFAULT_UTILIZATION:
        raise ValueError(f"no utilization default for method {method!r}")
    return DEFAULT_UTILIZATION[method], DEFAULT_SOURCE.format(method=method)
