"""Measure one configuration in this process: real training steps of a spec.

The model is built by ``runtime.build.build`` (random weights from the config, or local
safetensors weights; real peft and bitsandbytes layers) and trained by ``runtime.loop.run_steps``
on one fixed batch, so the step is the same step the planner and the trace describe. ``warmup``
steps run first (they create the optimizer state and warm the allocator and kernels); then
``steps`` measured steps. On CUDA the allocator's cache is emptied after the build, so blocks
freed while building (dense weights before quantization) do not count as reserved.

Memory counters:

- CUDA: the caching allocator's own statistics over the measured steps (peak statistics are reset
  when the first measured step begins): ``max_memory_allocated`` (tensor bytes, what the planner
  predicts), ``max_memory_reserved`` (segments the allocator holds), ``active_bytes.all.peak``,
  and over the whole run ``num_alloc_retries`` (cache flushes to satisfy a request) and
  ``num_ooms``; after the steps, NVML's memory for this process (CUDA context included), when
  pynvml is installed.
- CPU: the trace engine's storage tracker on the real tensors (sizes rounded as the CUDA
  allocator rounds them); there is no reserved/active/NVML memory on CPU, so those are None.
  CPU step times include the tracker's per-op bookkeeping.

Timing: ``torch.cuda.synchronize()`` before each step begins and after its optimizer step ends;
the step time is the median over measured steps (tokens/s = b * s * grad_accum / median).
The loss of every step is read with ``.item()``; on a fixed batch it must fall.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.records import asdict, dataclass, field
from lora_budget.spec import TrainSpec

DEFAULT_LR = 1e-3
"""Profile learning rate: high enough that the loss on a fixed batch visibly falls in a few steps
(the reference loop's 1e-4 barely moves a LoRA adapter whose B starts at zero). Memory does not
depend on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How to run the steps (the same for every configuration of a sweep)."""

    device: str = "cpu"
    """cpu or cuda."""
    steps: int = 5
    """Measured steps."""
    warmup: int = 2
    """Steps run before measuring."""
    lr: float = DEFAULT_LR
    seed: int = 0
    snapshot: str | None = None
    """CUDA only: write a memory snapshot of the last measured step to this path (.pickle)."""
    weights: str | None = None
    """A local folder of safetensors weights to load instead of random ones."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise LoraBudgetError(f"unknown device {self.device!r}; choose cuda or cpu")
        if self.steps < 1 or self.warmup < 0:
            raise LoraBudgetError("need at least 1 measured step and a non-negative number of warm-up steps")


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What one configuration did. Byte counts are None where the device has no such counter."""

    status: str
    """ok, oom (does not fit: the allocator ran out of memory) or error."""
    counter: str
    """cuda (the caching allocator's statistics) or tracker (storages counted on CPU)."""
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_active_bytes: int | None = None
    alloc_retries: int | None = None
    ooms: int | None = None
    nvml_process_bytes: int | None = None
    peak_phase: str = ""
    """Where the peak happened (tracker only)."""
    categories: dict[str, int] | None = None
    """The peak split into the shared memory categories (tracker only: CUDA counters have no split)."""
    step_s: float | None = None
    """Median measured step time, seconds."""
    step_times_s: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    losses: list[float] = field(default_factory=list)
    """Loss of every step, warm-up included."""
    snapshot: str | None = None
    error: str = ""
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_tokens(vocab: int, count: int) -> list[int]:
    """A repeated pattern (period 61, ids 3 .. 63 mod vocab): learnable in a few steps."""
    return [3 + (7 * i) % 61 if vocab > 64 else (7 * i) % vocab for i in range(count)]


def measure(spec: TrainSpec, settings: Settings, tokens: list[int] | None = None) -> Measurement:
    """Train ``spec`` for ``warmup + steps`` steps on ``settings.device`` and measure it.

    ``tokens``: ids for the fixed batch (repeated to fill b x s); default ``synthetic_tokens``.
    Raises ``torch.OutOfMemoryError`` when the configuration does not fit (the worker turns it
    into a result row).
    """
    from lora_budget.runtime.build import build, import_stack
    from lora_budget.runtime.loop import make_optimizer

    torch, _, _, _ = import_stack(need_bnb=spec.method in ("qlora", "lora8bit") or "8bit" in spec.optimizer)
    cuda = settings.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise LoraBudgetError(
            f"--device cuda: PyTorch sees no CUDA device (torch {torch.__version__}); use --device cpu"
        )
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    built = build(spec, device=settings.device, seed=settings.seed, weights=settings.weights)
    optimizer = make_optimizer(spec, built.trainable, paged=cuda, lr=settings.lr)
    count = spec.batch_size * spec.seq_len
    ids = tokens or synthetic_tokens(spec.model.shape.vocab, count)
    ids = (ids * (count // len(ids) + 1))[:count]
    batch = torch.tensor(ids, dtype=torch.long).view(spec.batch_size, spec.seq_len).to(settings.device)
    clock = _Clock(settings, sync=torch.cuda.synchronize if cuda else lambda: None)
    if cuda:
        counters = _run_cuda(torch, built, optimizer, spec, batch, settings, clock)
    else:
        counters = _run_tracked(built, optimizer, spec, batch, settings, clock)
    times = clock.measured_times()
    step_s = statistics.median(times)
    return Measurement(
        status="ok",
        **counters,
        step_s=step_s,
        step_times_s=times,
        tokens_per_s=count * spec.grad_accum / step_s if step_s > 0 else None,
        losses=clock.losses(),
        wall_s=time.perf_counter() - started,
    )


class _Clock:
    """Step boundaries, times and losses, from ``run_steps``' callbacks."""

    def __init__(self, settings: Settings, sync: Any):
        self.settings = settings
        self.sync = sync
        self.start: dict[int, float] = {}
        self.end: dict[int, float] = {}
        self._losses: dict[int, list[float]] = {}
        self.on_measure_start: Any = lambda: None
        self.on_snapshot_start: Any = lambda: None
        self.on_snapshot_end: Any = lambda: None

    @property
    def total(self) -> int:
        return self.settings.warmup + self.settings.steps

    def on_phase(self, phase: str, step: int) -> None:
        if phase == "forward" and step not in self.start:
            self.sync()
            if step == self.settings.warmup + 1:
                self.on_measure_start()
            if step == self.total:
                self.on_snapshot_start()
            self.start[step] = time.perf_counter()

    def after_step(self, step: int) -> None:
        self.sync()
        self.end[step] = time.perf_counter()
        if step == self.total:
            self.on_snapshot_end()

    def on_loss(self, step: int, loss: Any) -> None:
        self._losses.setdefault(step, []).append(float(loss.item()))

    def measured_times(self) -> list[float]:
        first = self.settings.warmup + 1
        times = [self.end[k] - self.start[k] for k in range(first, self.total + 1)]
        if self.settings.snapshot and len(times) > 1:
            times = times[:-1]  # recording the snapshot slows its step
        return times

    def losses(self) -> list[float]:
        return [statistics.fmean(self._losses[k]) for k in sorted(self._losses)]


def _run_tracked(built: Any, optimizer: Any, spec: TrainSpec, batch: Any, settings: Settings, clock: _Clock) -> dict:
    """CPU: count the real tensors' storages with the trace engine's tracker and its category tags."""
    from lora_budget.runtime.loop import run_steps
    from lora_budget.trace.attribute import attribute
    from lora_budget.trace.engine import Hooks, cuda_kernels, register_static, timeline_rows
    from lora_budget.trace.tracker import Tracker

    tracker = Tracker(vocab=spec.model.shape.vocab)
    register_static(tracker, built, spec)
    tracker.register(batch, "activations")
    hooks = Hooks(built, tracker, optimizer, paged=False, steps=clock.total, fake=False, progress=None)

    def on_phase(phase: str, step: int) -> None:
        clock.on_phase(phase, step)
        hooks.on_phase(phase, step)

    def after_step(step: int) -> None:
        hooks.after_step(step)
        clock.after_step(step)

    with hooks.installed(), cuda_kernels(), tracker:
        run_steps(
            built.model,
            optimizer,
            spec,
            batch,
            steps=clock.total,
            on_phase=on_phase,
            on_loss=clock.on_loss,
            after_backward=hooks.after_backward,
            after_step=after_step,
        )
    measured = [(event, live, phase) for event, live, phase, step in timeline_rows(tracker) if step > settings.warmup]
    at = max(measured, key=lambda row: row[1])  # the first event at the measured steps' peak
    breakdown, _ = attribute(tracker, at)
    return {
        "counter": "tracker",
        "peak_allocated_bytes": int(at[1]),
        "peak_phase": at[2],
        "categories": breakdown.as_dict(),
    }


def _run_cuda(
    torch: Any, built: Any, optimizer: Any, spec: TrainSpec, batch: Any, settings: Settings, clock: _Clock
) -> dict:
    """CUDA: the caching allocator's statistics over the measured steps."""
    from lora_budget.runtime.loop import run_steps

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    clock.on_measure_start = torch.cuda.reset_peak_memory_stats
    snapshot_path = settings.snapshot
    if snapshot_path:
        clock.on_snapshot_start = lambda: torch.cuda.memory._record_memory_history(max_entries=1_000_000)

        def dump() -> None:
            torch.cuda.memory._dump_snapshot(snapshot_path)
            torch.cuda.memory._record_memory_history(enabled=None)

        clock.on_snapshot_end = dump
    run_steps(
        built.model,
        optimizer,
        spec,
        batch,
        steps=clock.total,
        on_phase=clock.on_phase,
        on_loss=clock.on_loss,
        after_step=clock.after_step,
    )
    torch.cuda.synchronize()
    out = cuda_counters(torch)
    out["snapshot"] = snapshot_path
    return out


def cuda_counters(torch: Any) -> dict[str, Any]:
    """The allocator's peak and event counters now, and NVML's view of this process."""
    from lora_budget.profile.environment import nvml_process_bytes

    stats = torch.cuda.memory_stats()
    try:
        nvml_index = torch.cuda._get_nvml_device_index(torch.cuda.current_device())
    except Exception:  # private helper; CUDA_VISIBLE_DEVICES parsing can fail on odd values
        nvml_index = torch.cuda.current_device()
    return {
        "counter": "cuda",
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
        "peak_active_bytes": int(stats.get("active_bytes.all.peak", 0)),
        "alloc_retries": int(stats.get("num_alloc_retries", 0)),
        "ooms": int(stats.get("num_ooms", 0)),
        "nvml_process_bytes": nvml_process_bytes(nvml_index),
    }


def is_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator failing a request."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def failed(settings: Settings, exc: BaseException, wall_s: float) -> Measurement:
    """The row of a configuration that raised: oom (with the counters at that point) or error."""
    import torch

    oom = is_oom(exc)
    counters: dict[str, Any] = {"counter": "cuda" if settings.device == "cuda" else "tracker"}
    if settings.device == "cuda" and torch.cuda.is_available():
        counters = cuda_counters(torch)
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return Measurement(
        status="oom" if oom else "error",
        error=message if oom else f"{type(exc).__name__}: {message}",
        wall_s=wall_s,
        **counters,
    )
