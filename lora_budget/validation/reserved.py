"""Reserved memory, predicted by the allocator replay, against the published rows that report it.

Which rows: those of ``data/published-memory.csv`` (and the added file) whose ``memory_metric``
is reserved memory (torchtune's ``peak_memory_reserved``, i.e. ``torch.cuda.max_memory_reserved``)
or ``nvidia-smi`` used memory. Each is traced at full depth on fake tensors: torchtune rows
through ``published_map.map_row`` and ``trace`` (whose ``reserved`` is the caching-allocator
replay of ``lora_budget/trace/allocator.py``), the transformers docs' bert-large rows through
``reserved_bert``. The traces take minutes, so their results live in
``data/reserved-traces.json`` with the commit and library versions they were made with; the
report reads that file, and ``--retrace`` recomputes it.

What is compared:

- reserved rows: the replayed ``max_memory_reserved`` against the published figure;
- nvidia-smi rows: replayed reserved memory plus the CUDA context. ``nvidia-smi`` (pynvml
  ``used``) counts the process's whole device memory: the context (driver, kernels) and every
  segment the caching allocator holds. The allocator returns no segment to the driver unless a
  ``cudaMalloc`` fails or ``empty_cache`` is called, which the Trainer does not by default, so
  after training it holds its peak. The context is the source's own measurement:
  ``model_memory_anatomy.md`` prints 1343 MB (pynvml ``used // 1024**2``, so MiB) after
  ``torch.ones((1, 1)).to("cuda")`` on the same V100 (``CONTEXT_BYTES``). cuBLAS, which loads on
  the first matmul, came after that measurement and is not in it.

error = predicted / published - 1. Rows torchtune published without naming the statistic
(``unstated``) are shown beside both predictions, outside the summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import write_atomic
from lora_budget.records import dataclass, fields
from lora_budget.units import MiB
from lora_budget.validation.published_map import map_row, metric_kind, published_bytes
from lora_budget.validation.reserved_bert import bert_run, is_bert

TRACES = Path(__file__).with_name("data") / "reserved-traces.json"
CONTEXT_BYTES = 1343 * MiB
"""CUDA context of the transformers docs' V100 runs, as that page measured it (see the module doc)."""
WITHIN = 0.10
"""The issue's band: share of rows within +-10 %."""
UNSTATED_SHOWN = ("129", "131")
"""torchtune single-GPU rows of unstated statistic whose configs equal traced reserved rows
(129 = 163, 131 = 159): shown beside both predictions."""
ABOUT = (
    "Full-depth fake-tensor traces of the published rows that report reserved or nvidia-smi memory, keyed "
    "by row id: the traced configuration (spec), the tracker's peak, the replayed max_memory_allocated and "
    "max_memory_reserved, fragmentation at the reserved peak (bytes), segments, trace seconds. Written by "
    "python -m lora_budget.validation.reserved --retrace at the commit and versions below."
)
ROW_PROVENANCE = ("commit", "code", "uncommitted_changes", "versions")
"""Stored with each row too: ``--rows`` retraces some rows at a later commit than the others."""
TRACE_KEYS = (
    "tracked_peak_bytes",
    "cuda_allocated_bytes",
    "reserved_bytes",
    "fragmentation_bytes",
    "segments",
    "wall_s",
)


def selected(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows that report reserved or nvidia-smi memory, in file order."""
    return [r for r in rows if metric_kind(r) in ("reserved", "nvidia-smi")]


def spec_key(row: dict[str, str]) -> tuple[str, str]:
    """(what is traced, why not): a stable text naming the traced configuration, or a reason."""
    if is_bert(row):
        run, why = bert_run(row)
        return ("", why) if run is None else ("bert-large " + _fields(run), "")
    mapped = map_row(row)
    if mapped.spec is None:
        return "", "; ".join(mapped.reasons)
    spec = mapped.spec
    return f"{spec.model.name} " + _fields(spec, skip=("model", "warnings")), ""


def same_spec(stored: str, current: str) -> bool:
    """Whether a stored spec key names the configuration ``current`` names: the same model and the
    same value of every field both name (a field added to the spec since the trace is not a change
    of what the row maps to, unless its mapping sets it, which ``--retrace`` then records)."""
    (name_a, a), (name_b, b) = _split(stored), _split(current)
    return name_a == name_b and all(a[k] == b[k] for k in a.keys() & b.keys())


def _split(key: str) -> tuple[str, dict[str, str]]:
    import re

    first = re.search(r" \w+=", key)
    head = key if first is None else key[: first.start()]
    return head, dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", key[len(head) :]))


def _fields(obj: Any, skip: tuple[str, ...] = ()) -> str:
    return " ".join(f"{f.name}={getattr(obj, f.name)!r}" for f in fields(obj) if f.name not in skip)


# -- tracing ----------------------------------------------------------------------------------
def _trace_row(row: dict[str, str]) -> dict[str, Any]:
    if is_bert(row):
        from lora_budget.validation.reserved_bert import trace_bert

        run, _ = bert_run(row)
        t = trace_bert(run)
        return {k: getattr(t, k) for k in TRACE_KEYS}
    from lora_budget.trace.engine import trace

    r = trace(map_row(row).spec)
    rep = r.reserved
    return {
        "tracked_peak_bytes": r.peak_bytes,
        "cuda_allocated_bytes": rep.peak_allocated,
        "reserved_bytes": rep.peak_reserved,
        "fragmentation_bytes": rep.fragmentation,
        "segments": rep.segments,
        "wall_s": r.wall_s,
    }


def provenance(path: Path = TRACES) -> dict[str, Any]:
    """The commit and library versions a trace is made with: ``HEAD`` of the repository holding
    ``path``, and whether the code that ran had uncommitted changes there. Code running from
    outside that repository is an export, so that other edits of the working tree cannot reach a
    run of many minutes: ``git archive HEAD lora_budget | tar -x -C DIR`` and
    ``git rev-parse HEAD > DIR/COMMIT``, then ``PYTHONPATH=DIR python -m
    lora_budget.validation.reserved --retrace --traces <this repository's data file>``."""
    from importlib.metadata import PackageNotFoundError, version

    root = path.resolve().parents[3]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    code = Path(__file__).resolve()
    if code.is_relative_to(root):
        commit, changed, where = (
            git("rev-parse", "HEAD"),
            bool(git("status", "--porcelain", "--", "lora_budget")),
            "working tree",
        )
    else:
        stamp = code.parents[2] / "COMMIT"
        if not stamp.exists():
            raise LoraBudgetError(f"{code.parents[2]} is an export: write its commit to {stamp} first")
        commit, changed, where = stamp.read_text().strip(), False, "git archive of the commit"
    return {"commit": commit, "code": where, "uncommitted_changes": changed, "versions": versions}


def retrace(rows: list[dict[str, str]], path: Path = TRACES, only: set[str] | None = None, log=print) -> dict:
    """Trace every selected row (configurations traced once), write ``path`` and return its data.
    ``only``: row ids to retrace, keeping the others' stored results."""
    old = load(path) if only and path.exists() else {"rows": {}}
    made = provenance(path)
    data: dict[str, Any] = {"about": ABOUT, **made, "rows": dict(old["rows"])}
    done: dict[str, dict[str, Any]] = {}
    for row in selected(rows) + [r for r in rows if r["id"] in UNSTATED_SHOWN]:
        key, why = spec_key(row)
        if not key or (only and row["id"] not in only):
            continue
        if key not in done:
            log(f"tracing row {row['id']}: {key[:100]}", file=sys.stderr)
            done[key] = _trace_row(row)
        data["rows"][row["id"]] = {"spec": key, **done[key], **{k: made[k] for k in ROW_PROVENANCE}}
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def load(path: Path = TRACES) -> dict[str, Any]:
    if not path.exists():
        raise LoraBudgetError(f"{path} missing: run python -m lora_budget.validation.reserved --retrace")
    return json.loads(path.read_text(encoding="utf-8"))


# -- comparison ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ReservedRow:
    """One published figure beside the replay's prediction."""

    id: str
    source: str
    model: str
    method: str
    metric: str
    """``reserved``, ``nvidia-smi`` or ``unstated``."""
    published_bytes: int
    tracked_peak_bytes: int | None
    """The trace's allocated peak (storages rounded to 512 B)."""
    cuda_allocated_bytes: int | None
    reserved_bytes: int | None
    context_bytes: int
    """Added for nvidia-smi rows (``CONTEXT_BYTES``), else 0."""
    reason: str
    """Why the row has no prediction; empty when it has one."""
    stale: bool = False
    """The stored trace was made for another configuration than the row maps to now."""

    @property
    def predicted_bytes(self) -> int | None:
        return None if self.reserved_bytes is None else self.reserved_bytes + self.context_bytes

    @property
    def error(self) -> float | None:
        p = self.predicted_bytes
        return None if p is None or self.stale else p / self.published_bytes - 1

    @property
    def allocated_error(self) -> float | None:
        """The allocated peak (plus context) against the figure: what the replay adds is the difference."""
        if self.cuda_allocated_bytes is None or self.stale:
            return None
        return (self.cuda_allocated_bytes + self.context_bytes) / self.published_bytes - 1


def compare(rows: list[dict[str, str]], data: dict[str, Any]) -> list[ReservedRow]:
    """The selected rows (then the unstated rows shown) against the stored traces."""
    out = []
    for row in selected(rows) + [r for r in rows if r["id"] in UNSTATED_SHOWN]:
        key, why = spec_key(row)
        stored = data["rows"].get(row["id"])
        kind = metric_kind(row)
        values = {k: None for k in ("tracked_peak_bytes", "cuda_allocated_bytes", "reserved_bytes")}
        if key and stored is None:
            why = "not traced yet: run with --retrace"
        elif key:
            values = {k: stored[k] for k in values}
        out.append(
            ReservedRow(
                id=row["id"],
                source=row["source"].split(" ")[0].split("/")[-1],
                model=row["model"].split(" (")[0],
                method=row["method"],
                metric=kind,
                published_bytes=published_bytes(row) or 0,
                context_bytes=CONTEXT_BYTES if kind == "nvidia-smi" else 0,
                reason=why,
                stale=bool(key and stored is not None and not same_spec(stored["spec"], key)),
                **values,
            )
        )
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    rows: int
    """Rows reporting reserved / nvidia-smi memory."""
    predicted: int
    """Of those, rows with a (current) prediction."""
    median_abs_error: float | None
    within: float | None
    """Share of predicted rows within +-``WITHIN``."""
    median_abs_allocated_error: float | None
    """The same rows compared with the allocated peak (plus context): what the replay is worth."""


def summarize(rows: list[ReservedRow], metric: str | None = None) -> Summary:
    chosen = [r for r in rows if r.metric != "unstated" and (metric is None or r.metric == metric)]
    errors = [abs(r.error) for r in chosen if r.error is not None]
    alloc = [abs(r.allocated_error) for r in chosen if r.allocated_error is not None]
    return Summary(
        rows=len(chosen),
        predicted=len(errors),
        median_abs_error=statistics.median(errors) if errors else None,
        within=sum(e <= WITHIN for e in errors) / len(errors) if errors else None,
        median_abs_allocated_error=statistics.median(alloc) if alloc else None,
    )


def main(argv: list[str] | None = None) -> int:
    from lora_budget.validation.published import load_rows
    from lora_budget.validation.reserved_render import render

    parser = argparse.ArgumentParser(
        prog="python -m lora_budget.validation.reserved",
        description="Replayed reserved memory against the published rows that report it.",
    )
    parser.add_argument("--out", type=Path, help="folder to write reserved.md into (default: print it)")
    parser.add_argument("--retrace", action="store_true", help=f"trace every row again and rewrite {TRACES.name}")
    parser.add_argument("--rows", help="with --retrace: only these comma-separated row ids")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--traces", type=Path, default=TRACES, help="the stored traces (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = load_rows()
    try:
        if args.retrace:
            only = set(args.rows.split(",")) if args.rows else None
            data = retrace(rows, args.traces, only=only)
        else:
            data = load(args.traces)
    except LoraBudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    compared = compare(rows, data)
    if args.json:
        print(json.dumps([_as_dict(r) for r in compared], indent=1))
        return 0
    text = render(compared, data)
    if args.out is None:
        print(text)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / "reserved.md", text)
        print(args.out / "reserved.md")
    return 0


def _as_dict(r: ReservedRow) -> dict[str, Any]:
    d = {f.name: getattr(r, f.name) for f in fields(r)}
    d.update(predicted_bytes=r.predicted_bytes, error=r.error, allocated_error=r.allocated_error)
    return d


if __name__ == "__main__":
    raise SystemExit(main())
