"""pytest plugin: fail a test when a training step of your model needs more memory than its budget.

Registered through the ``pytest11`` entry point, so pytest loads it in every session: this
module imports nothing heavy (torch is imported only when a test uses the fixture).

Usage::

    def test_step_fits(memory_budget):
        model, batch = make_model(), make_batch()
        with memory_budget("2GiB", model=model, optimizer=opt) as m:
            model(batch).loss.backward()
            opt.step()
        print(m.peak_bytes)

    @pytest.mark.memory_budget("512MiB")   # the budget for memory_budget() without a limit
    def test_other(memory_budget):
        with memory_budget(model=model):
            ...

On CPU (or with ``device="tracker"``) a :class:`lora_budget.trace.tracker.Tracker` counts every
storage the step allocates, rounded as the CUDA caching allocator rounds requests, plus the
model's parameters and buffers and the optimizer's state when they are passed; the failure names
the bytes per category at the peak. When the model lives on a CUDA device (or ``device="cuda"``),
the peak is ``torch.cuda.max_memory_allocated()`` over the block instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from lora_budget.records import dataclass, field

MARKER = "memory_budget"


@dataclass(slots=True)
class Measurement:
    """What the block used; filled in when it exits."""

    budget_bytes: int
    peak_bytes: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    """Bytes per category at the peak (tracker only)."""
    where: str = ""
    """Op and module at the peak (tracker), or how the peak was measured (CUDA)."""
    device: str = ""


def _size(limit: int | str) -> int:
    from lora_budget.units import parse_size

    if isinstance(limit, bool) or not isinstance(limit, int | str):
        raise pytest.UsageError(f"memory_budget: a budget is bytes (int) or a size like '2GiB', got {limit!r}")
    from lora_budget.errors import LoraBudgetError

    try:
        nbytes = limit if isinstance(limit, int) else parse_size(limit)
    except LoraBudgetError as exc:
        raise pytest.UsageError(f"memory_budget: {exc}") from None
    if nbytes <= 0:
        raise pytest.UsageError(f"memory_budget: the budget must be positive, got {limit!r}")
    return nbytes


def _fmt(nbytes: int) -> str:
    from lora_budget.units import fmt_bytes

    return fmt_bytes(nbytes)


def _on_cuda(model: Any) -> bool:
    if model is None:
        return False
    param = next(iter(model.parameters()), None)
    return param is not None and param.device.type == "cuda"


class MemoryBudget:
    """The ``memory_budget`` fixture: call it to get a context manager around one step."""

    def __init__(self, default_limit: int | str | None) -> None:
        self.default_limit = default_limit
        self.measurements: list[Measurement] = []

    @contextlib.contextmanager
    def __call__(
        self,
        limit: int | str | None = None,
        *,
        model: Any = None,
        optimizer: Any = None,
        device: str = "auto",
        vocab: int | None = None,
    ) -> Iterator[Measurement]:
        if limit is None:
            limit = self.default_limit
        if limit is None:
            raise pytest.UsageError(
                "memory_budget: give a budget, memory_budget('2GiB'), or mark the test "
                "@pytest.mark.memory_budget('2GiB')"
            )
        if device not in ("auto", "tracker", "cuda"):
            raise pytest.UsageError(f"memory_budget: device must be auto, tracker or cuda, got {device!r}")
        m = Measurement(budget_bytes=_size(limit))
        self.measurements.append(m)
        use_cuda = device == "cuda" or (device == "auto" and _on_cuda(model))
        measure = _cuda if use_cuda else _tracked
        with measure(m, model, optimizer, vocab):
            yield m
        if m.peak_bytes > m.budget_bytes:
            over = 100.0 * (m.peak_bytes - m.budget_bytes) / m.budget_bytes
            lines = [
                f"memory budget exceeded: peak {_fmt(m.peak_bytes)} ({m.peak_bytes:,} bytes) > budget "
                f"{_fmt(m.budget_bytes)} ({m.budget_bytes:,} bytes), {over:+.1f} %",
                f"  measured by: {m.device}" + (f"; peak at {m.where}" if m.where else ""),
            ]
            if m.breakdown:
                parts = [f"{k} {_fmt(v)}" for k, v in sorted(m.breakdown.items(), key=lambda kv: -kv[1]) if v]
                lines.append("  at the peak: " + ", ".join(parts))
            lines.append(
                "  fix: shrink the step (batch, sequence, checkpointing) or raise the budget if the growth is intended"
            )
            pytest.fail("\n".join(lines), pytrace=False)


@contextlib.contextmanager
def _tracked(m: Measurement, model: Any, optimizer: Any, vocab: int | None) -> Iterator[None]:
    from lora_budget.trace.tracker import Tracker

    if vocab is None:
        vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    tracker = Tracker(vocab=vocab)
    if model is not None:
        for name, p in model.named_parameters():
            tracker.register(p, "adapter" if "lora_" in name else "weights")
            if p.grad is not None:
                tracker.register(p.grad, "gradients")
        for b in model.buffers():
            tracker.register(b, "weights")
    if optimizer is not None:
        _tag_optimizer(tracker, optimizer, register=True)
    with tracker:
        yield
    if model is not None:
        for p in model.parameters():
            if p.grad is not None:
                tracker.tag(p.grad, "gradients")
    if optimizer is not None:
        _tag_optimizer(tracker, optimizer, register=False)
    peak_event = tracker.peak.event if tracker.ops else tracker.event
    totals: dict[str, int] = {}
    for block in tracker.blocks:
        if block.born > peak_event or (block.died is not None and block.died < peak_event):
            continue
        key = block.category or "activations & temporaries"
        totals[key] = totals.get(key, 0) + block.size
    m.peak_bytes = max(tracker.peak.bytes, sum(totals.values()))
    m.breakdown = totals
    m.device = "lora_budget Tracker (storages, CUDA allocator rounding)"
    if tracker.ops:
        m.where = f"op {tracker.peak.op}" + (f" in {tracker.peak.module}" if tracker.peak.module else "")


def _tag_optimizer(tracker: Any, optimizer: Any, register: bool) -> None:
    import torch

    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                (tracker.register if register else tracker.tag)(value, "optimizer")


@contextlib.contextmanager
def _cuda(m: Measurement, model: Any, optimizer: Any, vocab: int | None) -> Iterator[None]:
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("memory_budget(device='cuda'): no CUDA device is available")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    yield
    torch.cuda.synchronize()
    m.peak_bytes = torch.cuda.max_memory_allocated()
    m.device = f"torch.cuda.max_memory_allocated ({_fmt(before)} allocated before the block)"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(limit): peak-memory budget (bytes or a size like '2GiB') for the memory_budget fixture"
    )


@pytest.fixture
def memory_budget(request: Any) -> MemoryBudget:
    """A context-manager factory: ``with memory_budget('2GiB', model=m, optimizer=opt): step()``."""
    marker = request.node.get_closest_marker(MARKER)
    default = marker.args[0] if marker is not None and marker.args else None
    return MemoryBudget(default)
