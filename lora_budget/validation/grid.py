"""Plan against trace over a grid of architectures, methods, checkpointing and (batch, seq) points.

The trace is the ground truth (every storage of the real step, counted); the planner is judged
by its relative error on the total peak and on each category. A row per configuration goes to a
CSV as soon as it is traced, so an interrupted run keeps what it finished and ``resume`` skips it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_budget.breakdown import CATEGORIES
from lora_budget.fsio import write_atomic
from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec

ARCHITECTURES: dict[str, str] = {
    "Llama-2-7B": "Llama 2: multi-head attention, untied 32k vocabulary, SwiGLU",
    "Llama-3.2-1B": "Llama 3: grouped-query attention, 128k vocabulary, tied embeddings",
    "Qwen2.5-0.5B": "Qwen2.5: q/k/v biases, GQA, tied embeddings, 152k vocabulary",
    "Qwen3-0.6B": "Qwen3: per-head q/k RMSNorm, head_dim != hidden/heads",
    "Gemma-2-2B": "Gemma 2: sandwich norms, logit soft-capping (eager attention), GeGLU, tied",
    "Phi-3-mini-4k": "Phi-3: fused qkv_proj and gate_up_proj",
    "GPT-2": "GPT-2: Conv1D, LayerNorm, GELU, learned positions, dropout 0.1",
    "Falcon-7B": "Falcon: multi-query attention (SDPA math path), parallel attention/MLP, LayerNorm, GELU",
    "Gemma-3-1B": "Gemma 3: sliding-window layers (a materialized local mask), q/k norms, 262k vocabulary",
    "OLMo-2-7B": "OLMo 2: norms after attention and MLP (post-norm), full-width q/k norms, weight applied in fp32",
}
METHODS = ("full", "lora", "qlora")
POINTS = ((1, 1024), (4, 512), (2, 2048))
"""(batch, seq) points: short, wide and long."""
QUICK = (("GPT-2", (2, 256)), ("Qwen2.5-0.5B", (1, 512)))
"""The small grid CI runs on every change."""

STATE = ("weights", "quant_state", "adapter", "gradients", "optimizer")
"""Categories whose whole-step size does not depend on where the peak falls."""

FIELDS = (
    ["model", "method", "grad_ckpt", "batch_size", "seq_len", "attn", "trace_peak_bytes", "plan_peak_bytes"]
    + [f"trace_{c}_bytes" for c in CATEGORIES]
    + [f"plan_{c}_bytes" for c in CATEGORIES]
    + [f"trace_state_{c}_bytes" for c in STATE]
    + [f"plan_state_{c}_bytes" for c in STATE]
    + ["trace_phase", "plan_phase", "trace_s", "error"]
)


@dataclass(frozen=True, slots=True)
class Config:
    model: str
    method: str
    grad_ckpt: bool
    batch_size: int
    seq_len: int

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.model, self.method, str(self.grad_ckpt), str(self.batch_size), str(self.seq_len))


def grid(quick: bool = False, models: tuple[str, ...] | None = None) -> list[Config]:
    """The validation grid: every architecture x method x checkpointing x (batch, seq) point."""
    if quick:
        pairs = [(m, p) for m, p in QUICK]
    else:
        pairs = [(m, p) for m in (models or tuple(ARCHITECTURES)) for p in POINTS]
    return [
        Config(model, method, ckpt, b, s) for model, (b, s) in pairs for method in METHODS for ckpt in (False, True)
    ]


def spec_for(config: Config) -> TrainSpec:
    from lora_budget.catalog.models import resolve_model

    return TrainSpec(
        model=resolve_model(config.model),
        method=config.method,
        grad_ckpt=config.grad_ckpt,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        framework="plain",  # the grid is of the reference loop (the Trainer's mechanisms: test_frameworks.py)
    )


def plan_columns(config: Config) -> dict[str, Any]:
    """The planner's columns of a row (cheap: no trace)."""
    from lora_budget.core.model import peak_model

    spec = spec_for(config)
    model = peak_model(spec)
    planned = model.breakdown(spec.batch_size, spec.seq_len)
    out: dict[str, Any] = {"plan_peak_bytes": planned.peak_bytes, "plan_phase": planned.phase}
    for c in CATEGORIES:
        out[f"plan_{c}_bytes"] = getattr(planned, c)
    for c in STATE:
        out[f"plan_state_{c}_bytes"] = getattr(model.static, c)
    return out


def replan(csv_path: Path) -> list[dict[str, str]]:
    """Plan every stored row again with the current planner (traces are kept); rewrite the CSV."""
    rows = read_rows(csv_path)
    for r in rows:
        r.update({k: str(v) for k, v in plan_columns(_config(r)).items()})
        r["error"] = str(round(int(r["plan_peak_bytes"]) / int(r["trace_peak_bytes"]) - 1, 6))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(csv_path, buf.getvalue())
    return rows


def compare(config: Config) -> dict[str, Any]:
    """Trace and plan one configuration; the CSV row."""
    from lora_budget.trace.engine import trace

    spec = spec_for(config)
    traced = trace(spec)
    planned = plan_columns(config)
    row: dict[str, Any] = {
        "model": config.model,
        "method": config.method,
        "grad_ckpt": config.grad_ckpt,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "attn": spec.attn,
        "trace_peak_bytes": traced.peak_bytes,
        "trace_phase": traced.breakdown.phase,
        "trace_s": round(traced.wall_s, 2),
        "error": round(planned["plan_peak_bytes"] / traced.peak_bytes - 1, 6),
        **planned,
    }
    for c in CATEGORIES:
        row[f"trace_{c}_bytes"] = getattr(traced.breakdown, c)
    for c in STATE:
        row[f"trace_state_{c}_bytes"] = traced.state_bytes[c]
    return row


def _config(row: dict[str, str]) -> Config:
    """The configuration a CSV row was traced for."""
    return Config(row["model"], row["method"], row["grad_ckpt"] == "True", int(row["batch_size"]), int(row["seq_len"]))


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def run(
    configs: list[Config],
    csv_path: Path,
    *,
    resume: bool = True,
    progress: Callable[[int, int, Config, dict[str, Any] | None], None] | None = None,
) -> list[dict[str, str]]:
    """Trace every configuration not yet in ``csv_path``, appending one row each."""
    done = {_config(r).key for r in read_rows(csv_path)}
    if not resume and csv_path.exists():
        done = set()
        csv_path.unlink()
    todo = [c for c in configs if c.key not in done]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not csv_path.exists()
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for i, config in enumerate(todo):
            if progress:
                progress(i, len(todo), config, None)
            row = compare(config)
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            if progress:
                progress(i + 1, len(todo), config, row)
    wanted = {c.key for c in configs}
    return [r for r in read_rows(csv_path) if _config(r).key in wanted]
