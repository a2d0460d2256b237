"""A sweep: methods x gradient checkpointing x sequence lengths x batch sizes, each run isolated.

Every configuration runs in its own worker process (``python -m lora_budget.profile.worker``),
so allocator state, fragmentation and the CUDA context of one cannot pollute the next. A
configuration that runs out of memory comes back as an ``oom`` row; a worker that dies comes back
as an ``error`` row with the end of its stderr. Ctrl-C stops the running worker and returns the
rows finished so far (``interrupted=True``), which the caller still saves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lora_budget import records
from lora_budget.core.model import estimate
from lora_budget.errors import LoraBudgetError
from lora_budget.profile.measure import Measurement, Settings
from lora_budget.profile.specio import model_to_dict, spec_to_dict
from lora_budget.records import dataclass, field
from lora_budget.spec import ModelRef, TrainSpec

Runner = Callable[[dict[str, Any]], dict[str, Any]]
Progress = Callable[[int, int, str, dict[str, Any] | None], None]
"""progress(index, total, label, row): row is None when configuration ``index`` starts."""

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(slots=True)
class SweepResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] | None = None
    interrupted: bool = False
    planned: int = 0
    """Configurations the sweep was asked to run."""


def grid(
    ref: ModelRef,
    methods: list[str],
    seq_lens: list[int],
    batch_sizes: list[int],
    ckpts: list[bool],
    **options: Any,
) -> list[TrainSpec]:
    """Every combination as a TrainSpec, smallest memory first within each method."""
    specs = []
    for method in methods:
        opts = dict(options)
        if method != "full":
            opts.pop("master_weights", None)
        for ckpt in ckpts:
            for seq_len in sorted(seq_lens):
                for batch_size in sorted(batch_sizes):
                    specs.append(
                        TrainSpec(
                            model=ref, method=method, seq_len=seq_len, batch_size=batch_size, grad_ckpt=ckpt, **opts
                        )
                    )
    return specs


def label(spec: TrainSpec) -> str:
    return f"{spec.method} b={spec.batch_size} s={spec.seq_len} ckpt={'on' if spec.grad_ckpt else 'off'}"


def slug(spec: TrainSpec) -> str:
    return f"{spec.method}-b{spec.batch_size}-s{spec.seq_len}-ckpt{'on' if spec.grad_ckpt else 'off'}"


def prediction(spec: TrainSpec) -> dict[str, Any]:
    """The planner's answer for the same spec, stored beside the measurement."""
    b = estimate(spec)
    return {"predicted_peak_bytes": b.peak_bytes, "predicted_phase": b.phase, "predicted": b.as_dict()}


def subprocess_runner(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh ``python -m lora_budget.profile.worker`` and return its answer."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_budget.profile.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(json.dumps(job))
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = " | ".join(err.strip().splitlines()[-3:]) or "no output"
    crashed = Measurement(
        status="error",
        counter="cuda" if job["settings"]["device"] == "cuda" else "tracker",
        error=f"worker exited with code {proc.returncode}: {tail}",
    )
    return {"environment": None, "measurement": crashed.to_dict()}


def environment_of(device: str) -> dict[str, Any]:
    """The environment record from a worker process (the parent never touches the GPU)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "lora_budget.profile.worker", "--env", device],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise LoraBudgetError(f"could not read the {device} environment: {done.stderr.strip()[-300:]}")
    return json.loads(lines[-1])["environment"]


def run_sweep(
    specs: list[TrainSpec],
    settings: Settings,
    *,
    tokens: list[int] | None = None,
    snapshot_dir: Path | None = None,
    runner: Runner | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run every spec in its own worker; Ctrl-C returns what finished (``interrupted``).

    ``runner``: how a job runs (default ``subprocess_runner``, a fresh process per job).
    """
    runner = runner or subprocess_runner
    if not specs:
        raise LoraBudgetError("nothing to profile: the sweep is empty")
    model = model_to_dict(specs[0].model)
    result = SweepResult(planned=len(specs))
    with _stops_like_ctrl_c():
        return _run_jobs(specs, settings, tokens, snapshot_dir, progress, runner, model, result)


@contextmanager
def _stops_like_ctrl_c() -> Iterator[None]:
    """SIGTERM (a CI timeout, ``kill``) and SIGHUP (a closed terminal) raise KeyboardInterrupt,
    so they end a sweep the way Ctrl-C does: the finished rows are kept and marked interrupted.
    Only the main thread can set handlers; elsewhere the defaults stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    saved = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _run_jobs(
    specs: Any, settings: Any, tokens: Any, snapshot_dir: Any, progress: Any, runner: Any, model: Any, result: Any
) -> SweepResult:
    try:
        for index, spec in enumerate(specs):
            name = label(spec)
            if progress:
                progress(index, len(specs), name, None)
            run_settings = settings
            if snapshot_dir is not None and settings.device == "cuda":
                run_settings = records.replace(settings, snapshot=str(snapshot_dir / f"{slug(spec)}.pickle"))
            job = {
                "model": model,
                "spec": spec_to_dict(spec),
                "settings": records.asdict(run_settings),
                "tokens": tokens,
            }
            answer = runner(job)
            if result.environment is None and answer.get("environment"):
                result.environment = answer["environment"]
            row = {"spec": spec_to_dict(spec), **answer["measurement"], **prediction(spec)}
            result.rows.append(row)
            if progress:
                progress(index, len(specs), name, row)
    except KeyboardInterrupt:
        result.interrupted = True
    return result
