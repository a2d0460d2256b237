"""The memory-regression gate behind ``lora-budget check``: measure, compare with a baseline, write one.

A baseline is a small JSON file meant to be committed and reviewed in diffs::

    {
      "schema": 1,
      "tool": "lora-budget", "tool_version": "0.1.0", "engine": "plan",
      "entries": [
        {"method": "lora",
         "spec": {"model": "Llama-2-7B", "method": "lora", "seq_len": 2048, ...},
         "peak_bytes": 32734281728, "phase": "backward",
         "categories": {"weights": 13476839424, ..., "overhead": 0}}
      ]
    }

The categories of an entry sum to its ``peak_bytes`` (checked on load). Memory regresses when a
peak exceeds its baseline by more than the tolerance (percent of the baseline peak).

Engines: ``plan`` (analytical), ``trace`` (fake-tensor dry run) and ``profile`` (real steps, each
spec in a fresh worker process: one warm-up step that creates the optimizer state, then
``PROFILE_STEPS`` measured ones). A profile baseline also records its ``device`` ("cpu" or the GPU's
name). On CPU the peak is the tracker's count of real tensors, split into categories; on CUDA it is
``torch.cuda.max_memory_allocated`` over the measured steps, which has no split, so a CUDA entry's
``categories`` is empty. A run that runs out of memory is a regression.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lora_budget import __version__, records
from lora_budget.breakdown import CATEGORIES
from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.loads import InputFileError, read_json
from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec

SCHEMA = 1
ENGINES = ("plan", "trace", "profile")
DEVICES = ("auto", "cuda", "cpu")
PROFILE_WARMUP = 1
PROFILE_STEPS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    method: str
    spec: dict[str, Any]
    """The spec's settings (model by name), so a diff of the baseline shows what changed."""
    categories: dict[str, int]
    peak_bytes: int
    phase: str
    oom: bool = False
    """profile only: the step ran out of memory (never written to a baseline)."""

    def to_dict(self) -> dict[str, Any]:
        out = records.asdict(self)
        del out["oom"]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    engine: str
    entries: tuple[Entry, ...]
    device: str = ""
    """profile only: "cpu" or the GPU's name."""
    tool_version: str = __version__
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "tool": "lora-budget",
            "tool_version": self.tool_version,
            "engine": self.engine,
        }
        if self.device:
            out["device"] = self.device
        out["entries"] = [e.to_dict() for e in self.entries]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    method: str
    baseline_bytes: int
    current_bytes: int
    tolerance_pct: float
    category_deltas: dict[str, int]
    """Current minus baseline bytes, per category (non-zero ones only)."""
    spec_changes: tuple[tuple[str, Any, Any], ...]
    """(setting, baseline value, current value) for every spec setting that differs."""
    oom: bool = False
    """The current run ran out of memory (profile engine): a regression whatever the numbers."""
    split: bool = True
    """Both sides have a per-category split (CUDA profiles have none)."""

    @property
    def delta_bytes(self) -> int:
        return self.current_bytes - self.baseline_bytes

    @property
    def delta_pct(self) -> float:
        return 100.0 * self.delta_bytes / self.baseline_bytes if self.baseline_bytes else float("inf")

    @property
    def regressed(self) -> bool:
        # integer comparison: current > baseline * (1 + tol/100), without float rounding at the edge
        if self.oom:
            return True
        return self.current_bytes * 10000 > self.baseline_bytes * round(10000 + 100 * self.tolerance_pct)

    @property
    def status(self) -> str:
        if self.oom:
            return "OUT OF MEMORY"
        if self.regressed:
            return "REGRESSION"
        return "smaller" if self.delta_bytes < 0 else "ok"


def spec_settings(spec: TrainSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"model": spec.model.name}
    for f in records.fields(spec):
        if f.name not in ("model", "warnings"):
            out[f.name] = getattr(spec, f.name)
    if spec.method == "full":
        for key in ("adapter_dtype", "rank", "alpha", "targets"):
            out.pop(key)
    if spec.method != "qlora":
        for key in ("quant", "quant_blocksize", "double_quant"):
            out.pop(key)
    return out


def measure(specs: list[TrainSpec], engine: str, *, device: str = "auto", runner: Any = None) -> Baseline:
    """Peak breakdown of each spec by ``engine`` (plan: analytical; trace: fake-tensor dry run;
    profile: real steps on ``device``, each spec in its own worker; ``runner`` replaces the worker
    in tests)."""
    if engine not in ENGINES:
        raise LoraBudgetError(f"unknown engine {engine!r}; choose {', '.join(ENGINES)}")
    if engine == "profile":
        return _profile(specs, device, runner)
    entries = []
    for spec in specs:
        if engine == "plan":
            from lora_budget.core.model import estimate

            breakdown = estimate(spec)
        else:
            from lora_budget.trace.engine import trace

            breakdown = trace(spec).breakdown
        entries.append(
            Entry(
                method=spec.method,
                spec=spec_settings(spec),
                categories=breakdown.as_dict(),
                peak_bytes=breakdown.peak_bytes,
                phase=breakdown.phase,
            )
        )
    return Baseline(engine=engine, entries=tuple(entries))


def _profile(specs: list[TrainSpec], device: str, runner: Any) -> Baseline:
    from lora_budget.profile.measure import Settings
    from lora_budget.profile.sweep import run_sweep

    if device not in DEVICES:
        raise LoraBudgetError(f"unknown device {device!r}; choose {', '.join(DEVICES)}")
    if device == "auto" or (device == "cuda" and runner is None):
        import torch  # the steps run in workers; here only to ask whether a GPU is there

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif not torch.cuda.is_available():
            raise LoraBudgetError(
                f"--device cuda: PyTorch sees no CUDA device here (torch {torch.__version__}); use --device cpu"
            )
    settings = Settings(device=device, steps=PROFILE_STEPS, warmup=PROFILE_WARMUP)
    result = run_sweep(specs, settings, runner=runner)
    if result.interrupted:
        raise KeyboardInterrupt
    entries = []
    for spec, row in zip(specs, result.rows, strict=True):
        if row["status"] == "error":
            raise LoraBudgetError(f"the {spec.method} profile step failed: {row['error']}")
        oom = row["status"] == "oom"
        categories = {} if oom else dict(row.get("categories") or {})
        peak = row["peak_allocated_bytes"] or 0
        entries.append(
            Entry(
                method=spec.method,
                spec=spec_settings(spec),
                categories=categories,
                peak_bytes=sum(categories.values()) if categories else peak,
                phase=row.get("peak_phase", ""),
                oom=oom,
            )
        )
    env = result.environment or {}
    name = env.get("gpu_name") if device == "cuda" else "cpu"
    return Baseline(engine="profile", entries=tuple(entries), device=name or device)


def _bad(path: Path, why: str) -> LoraBudgetError:
    return LoraBudgetError(
        f"baseline {path} {why}; restore it from version control, or recreate it with --update-baseline"
    )


def load_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    if not path.exists():
        raise LoraBudgetError(f"baseline {path} does not exist; create it with --update-baseline")
    try:
        raw = read_json(path, finite=True)  # not JSON, too deep, a huge integer, NaN, a FIFO
    except InputFileError as exc:
        raise _bad(path, f"is {exc.reason}" if exc.reason.startswith("not ") else exc.reason) from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        got = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise _bad(path, f"has schema {got!r}, this version reads schema {SCHEMA}")
    engine = raw.get("engine")
    if engine not in ENGINES:
        raise _bad(path, f"names engine {engine!r}, not one of {', '.join(ENGINES)}")
    items = raw.get("entries")
    if not isinstance(items, list) or not items:
        raise _bad(path, "has no `entries` list")
    entries = []
    for i, item in enumerate(items, start=1):
        try:
            cats = item["categories"]
            peak = item["peak_bytes"]
            if engine == "profile" and cats == {}:  # CUDA counters: a total without a split
                if type(peak) is not int or peak < 0:
                    raise ValueError(f"peak_bytes must be a non-negative int, got {peak!r}")
            else:
                if set(cats) != set(CATEGORIES) or not all(type(v) is int and v >= 0 for v in cats.values()):
                    raise ValueError(f"categories must be exactly {', '.join(CATEGORIES)}, as non-negative ints")
                if type(peak) is not int or peak != sum(cats.values()):
                    raise ValueError(f"peak_bytes {peak!r} is not the sum of its categories ({sum(cats.values())})")
            if peak == 0:  # no real step peaks at 0 bytes, and growth over 0 is a division by zero
                raise ValueError("peak_bytes is 0, and a baseline needs a measured peak")
            entries.append(
                Entry(
                    method=str(item["method"]),
                    spec=dict(item["spec"]),
                    categories={c: cats[c] for c in CATEGORIES} if cats else {},
                    peak_bytes=peak,
                    phase=str(item.get("phase", "")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, ValueError) else f"lacks or mangles {exc}"
            raise _bad(path, f"entry {i}: {why}") from None
    device = raw.get("device", "")
    if engine == "profile" and (not isinstance(device, str) or not device):
        raise _bad(path, "is a profile baseline without the `device` it was measured on")
    return Baseline(
        engine=engine,
        entries=tuple(entries),
        device=device if isinstance(device, str) else "",
        tool_version=str(raw.get("tool_version", "")),
        schema=SCHEMA,
    )


def check_replaceable(path: str | Path) -> None:
    """Refuse to let --update-baseline replace a file that is not a baseline (a config, notes).

    A baseline names its tool near its start (``"tool": "lora-budget"``), which survives
    the corruption that --update-baseline is the documented fix for (a truncated or hand-broken
    file); an empty file is replaceable too. Non-regular files are refused by fsio.
    """
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.strip() and b'"tool": "lora-budget"' not in head:
        raise LoraBudgetError(
            f"baseline {path} exists and is not a lora-budget baseline; not replaced "
            "(choose another --baseline, or remove the file first)"
        )


def write_baseline(path: str | Path, baseline: Baseline) -> None:
    """Write atomically: a temp file in the same folder, then os.replace (never a half-written file)."""
    path = Path(path)
    ran_out = [e.method for e in baseline.entries if e.oom]
    if ran_out:
        raise LoraBudgetError(
            f"not writing baseline {path}: {', '.join(ran_out)} ran out of memory on {baseline.device}; "
            "a baseline must be a step that fits"
        )
    if path.parent and not path.parent.exists():
        raise LoraBudgetError(f"cannot write baseline {path}: folder {path.parent} does not exist")
    check_replaceable(path)
    write_atomic(path, json.dumps(baseline.to_dict(), indent=2) + "\n")


def check_inputs(baseline: Baseline, engine: str, tolerance_pct: float, path: str | Path) -> None:
    """Raise LoraBudgetError for a tolerance or engine that ``compare`` would refuse (callers check
    before measuring, which can take minutes)."""
    if tolerance_pct < 0:
        raise LoraBudgetError(f"--tolerance must be at least 0 percent, got {tolerance_pct}")
    if baseline.engine != engine:
        raise LoraBudgetError(
            f"baseline {path} was measured by the {baseline.engine} engine, this check uses {engine}; "
            f"pass --engine {baseline.engine}, or rewrite the baseline with --update-baseline"
        )


def compare(baseline: Baseline, current: Baseline, tolerance_pct: float, path: str | Path) -> list[Comparison]:
    """One comparison per current entry; bad input (engine or method missing) raises LoraBudgetError."""
    check_inputs(baseline, current.engine, tolerance_pct, path)
    if baseline.engine == "profile" and _kind(baseline.device) != _kind(current.device):
        raise LoraBudgetError(
            f"baseline {path} was measured on {baseline.device}, this run on {current.device}; CPU and CUDA "
            f"counters differ: pass --device {_kind(baseline.device)}, or rewrite the baseline with --update-baseline"
        )
    by_method = {e.method: e for e in baseline.entries}
    out = []
    for entry in current.entries:
        base = by_method.get(entry.method)
        if base is None:
            raise LoraBudgetError(
                f"baseline {path} has no entry for {entry.method} (it has {', '.join(by_method)}); "
                "add it with --update-baseline, or check only those methods with --method"
            )
        split = bool(entry.categories) and bool(base.categories)
        deltas = {c: entry.categories[c] - base.categories[c] for c in CATEGORIES} if split else {}
        keys = list(dict.fromkeys([*base.spec, *entry.spec]))
        changes = tuple((k, base.spec.get(k), entry.spec.get(k)) for k in keys if base.spec.get(k) != entry.spec.get(k))
        out.append(
            Comparison(
                method=entry.method,
                baseline_bytes=base.peak_bytes,
                current_bytes=entry.peak_bytes,
                tolerance_pct=tolerance_pct,
                category_deltas={c: d for c, d in deltas.items() if d},
                spec_changes=changes,
                oom=entry.oom,
                split=split,
            )
        )
    return out


def _kind(device: str) -> str:
    return "cpu" if device == "cpu" else "cuda"
