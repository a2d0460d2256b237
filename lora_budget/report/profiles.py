"""Read predicted-vs-measured rows for the parity figures from JSON files.

A profile the store writes (``lora-budget profile``, ``"kind": "lora-budget-profile"``) is read
by the store's own loader (``profile.store.load_profile``, shared with ``profiles`` and
``calibrate``, schema migrations included): each ``ok`` row gives ``spec.method``, its
``predicted_peak_bytes`` and its measured ``peak_allocated_bytes``; OOM and error rows have no
measured peak and are left out.

Any other file is read in this minimal shape (for predicted/measured pairs from elsewhere)::

    {"schema": 1,
     "rows": [{"method": "lora", "predicted_bytes": 32734281728, "measured_bytes": 33021493248,
               "label": "Llama-2-7B b1 s2048"}]}

A file may also hold one row object, or a JSON list of row objects. ``method`` is a method name,
``predicted_bytes`` and ``measured_bytes`` positive integers (bytes), ``label`` optional.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.loads import InputFileError, read_json
from lora_budget.profile import store
from lora_budget.report.data import ParityRow


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.rglob("*.json"))
            if not found:
                raise LoraBudgetError(f"--profiles {path}: no .json files in this folder")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise LoraBudgetError(f"--profiles {path}: no such file or folder")
    return out


def _row(obj: Any, where: str) -> ParityRow:
    if not isinstance(obj, dict):
        raise LoraBudgetError(f"{where}: a row must be an object with method, predicted_bytes, measured_bytes")
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise LoraBudgetError(f"{where}: `method` must be a method name such as lora")
    values = {}
    for key in ("predicted_bytes", "measured_bytes"):
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LoraBudgetError(f"{where}: `{key}` must be a positive integer number of bytes, got {value!r}")
        values[key] = value
    label = obj.get("label", "")
    return ParityRow(method=method, label=str(label), **values)


def _store_rows(path: Path) -> list[ParityRow]:
    profile = store.load_profile(path)  # raises ProfileError (a LoraBudgetError) naming the file
    name = str(profile.model.get("name", ""))
    out = []
    for row in profile.rows:
        predicted, measured = row.get("predicted_peak_bytes"), row.get("peak_allocated_bytes")
        if row["status"] != "ok" or not all(type(v) is int and v > 0 for v in (predicted, measured)):
            continue
        spec = row["spec"]
        label = f"{Path(name).parent.name or name} b{spec['batch_size']} s{spec['seq_len']}"
        out.append(ParityRow(method=spec["method"], label=label, predicted_bytes=predicted, measured_bytes=measured))
    return out


def _rows_from_profiles(paths: Iterable[str | Path]) -> list[ParityRow]:
    """Every (method, predicted, measured) row in the given files and folders (``*.json``, recursive)."""
    rows: list[ParityRow] = []
    for path in _files(paths):
        try:
            data = read_json(path)  # the store's loader too: not JSON, too deep, a huge integer, a FIFO
        except InputFileError as exc:
            raise LoraBudgetError(f"{path}: cannot read it as JSON ({exc.reason})") from None
        if isinstance(data, dict) and data.get("kind") == store.KIND:
            rows += _store_rows(path)
            continue
        if isinstance(data, dict) and "rows" in data:
            if data.get("schema", 1) != 1:
                raise LoraBudgetError(f"{path}: schema {data.get('schema')!r} is not one this version reads (1)")
            items = data["rows"]
        elif isinstance(data, list):
            items = data
        else:
            items = [data]
        if not isinstance(items, list):
            raise LoraBudgetError(f"{path}: `rows` must be a list")
        rows += [_row(item, f"{path} row {i + 1}") for i, item in enumerate(items)]
    if not rows:
        raise LoraBudgetError("--profiles: the files hold no rows")
    return rows
