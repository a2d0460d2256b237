"""The profile store: versioned JSON files under ``profiles/<device>/``.

One file per sweep::

    {"kind": "lora-budget-profile", "schema_version": 2, "created_utc": "...",
     "environment": {device, gpu_name, gpu_memory_bytes, gpu_capability, driver_version,
                     cuda_version, cpu, python, platform, versions: {torch, transformers, peft,
                     bitsandbytes, lora-budget}},
     "model": {name, hf_id, source, config},          # the full config.json values
     "settings": {device, steps, warmup, lr, seed, data},
     "interrupted": false, "planned": N,
     "rows": [{"spec": {every TrainSpec field}, "status": "ok" | "oom" | "error",
               peak_allocated_bytes, peak_reserved_bytes, peak_active_bytes, alloc_retries,
               ooms, nvml_process_bytes, step_s, step_times_s, tokens_per_s, losses,
               categories (CPU tracker only: the peak split into memory categories), ...,
               predicted_peak_bytes, predicted_phase, predicted: {category: bytes}}]}

Files are written atomically (a temporary file in the same folder, then a hard link to the final
name, which fails rather than replace an existing file) and never overwritten. Loading validates
every file; a corrupt or foreign file is reported by name and the others still load.

Schema versions (an older file is migrated in memory when it loads; the file is not rewritten):

- 1: the first store. Rows' ``spec`` had no ``gpus``, ``strategy`` or ``offload``: every sweep
  then ran on one GPU (or the CPU) with no sharding or offload.
- 2: ``spec`` carries every TrainSpec field, the multi-GPU ones included. A version-1 row
  migrates with ``gpus=1, strategy="ddp", offload="none"`` where they are absent, which is
  TrainSpec's defaults and what the version-1 sweep measured.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.loads import InputFileError, read_json
from lora_budget.profile.specio import SPEC_FIELDS
from lora_budget.records import dataclass, field

SCHEMA_VERSION = 2
_V1_SPEC_DEFAULTS: dict[str, Any] = {"gpus": 1, "strategy": "ddp", "offload": "none"}
"""What a version-1 row's spec lacks (see the module docstring)."""
KIND = "lora-budget-profile"
STATUSES = ("ok", "oom", "error")
ENVIRONMENT_KEYS: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "gpu_name": (str, type(None)),
    "gpu_memory_bytes": (int, type(None)),
    "driver_version": (str, type(None)),
    "cuda_version": (str, type(None)),
    "versions": (dict,),
}
_NUMBER = (int, float)
_OPTIONAL_INT = (int, type(None))
ROW_KEYS: dict[str, tuple[type, ...]] = {
    "spec": (dict,),
    "status": (str,),
    "counter": (str,),
    "peak_allocated_bytes": _OPTIONAL_INT,
    "peak_reserved_bytes": _OPTIONAL_INT,
    "peak_active_bytes": _OPTIONAL_INT,
    "alloc_retries": _OPTIONAL_INT,
    "ooms": _OPTIONAL_INT,
    "nvml_process_bytes": _OPTIONAL_INT,
    "step_s": (*_NUMBER, type(None)),
    "tokens_per_s": (*_NUMBER, type(None)),
    "losses": (list,),
    "error": (str,),
    "predicted_peak_bytes": (int,),
}


class ProfileError(LoraBudgetError):
    """A profile file that cannot be read, is not a profile, or does not match the schema."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One stored sweep."""

    environment: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    created_utc: str
    interrupted: bool = False
    planned: int = 0
    path: Path | None = field(default=None, compare=False)

    @property
    def device_label(self) -> str:
        return self.environment.get("gpu_name") or "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "created_utc": self.created_utc,
            "environment": self.environment,
            "model": self.model,
            "settings": self.settings,
            "interrupted": self.interrupted,
            "planned": self.planned,
            "rows": self.rows,
        }


@dataclass(frozen=True, slots=True)
class LoadError:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unnamed"


def model_slug(name: str) -> str:
    """``tests/data/tiny-llama/config.json`` -> ``tiny-llama``; ``Llama-3.1-8B`` -> ``llama-3-1-8b``."""
    path = Path(name)
    if path.name == "config.json":
        name = path.parent.name or name
    elif path.suffix == ".json":
        name = path.stem
    return _slug(name)


def default_path(root: Path, profile: Profile) -> Path:
    """``root/<device>/<model>-<UTC timestamp>.json`` (device: the GPU name, or ``cpu``)."""
    stamp = profile.created_utc.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
    return root / _slug(profile.device_label) / f"{model_slug(profile.model['name'])}-{stamp}.json"


def save(profile: Profile, path: Path, *, unique: bool = False) -> Path:
    """Write ``profile`` to ``path`` atomically; never replace an existing file.

    ``unique``: when ``path`` exists, use ``<stem>-2.json``, ``-3``, ... instead of failing.
    """
    validate(json.loads(json.dumps(profile.to_dict())), path)  # what we write must load back
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(profile.to_dict(), indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a profile is shared data
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        candidate, n = path, 1
        while True:
            try:
                os.link(tmp, candidate)  # atomic, and fails instead of overwriting
                return candidate
            except FileExistsError:
                if not unique:
                    raise ProfileError(f"{candidate} already exists; not overwritten (choose another --out)") from None
                n += 1
                candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    finally:
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check(value: Any, types: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ProfileError(f"{what} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if not isinstance(value, types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ProfileError(f"{what} must be {names}, got {type(value).__name__}")


def validate(data: Any, where: Path | str) -> Profile:
    """The profile in ``data``, or a ProfileError naming ``where`` and what is wrong."""
    try:
        return _validate(data, where)
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None


def _validate(data: Any, where: Path | str) -> Profile:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ProfileError(f'not a lora-budget profile (no "kind": "{KIND}")')
    version = data.get("schema_version")
    if version == 1:
        data, version = _migrate_v1(data), 2
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ProfileError(f"schema version {version} is newer than this lora-budget reads ({SCHEMA_VERSION})")
        raise ProfileError(f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})")
    for key, types in (("environment", (dict,)), ("model", (dict,)), ("settings", (dict,)), ("rows", (list,))):
        if key not in data:
            raise ProfileError(f"missing {key!r}")
        _check(data[key], types, key)
    _check(data.get("created_utc"), (str,), "created_utc")
    env = data["environment"]
    for key, types in ENVIRONMENT_KEYS.items():
        if key not in env:
            raise ProfileError(f"environment is missing {key!r}")
        _check(env[key], types, f"environment.{key}")
    _check(data["model"].get("config"), (dict,), "model.config")
    _check(data["model"].get("name"), (str,), "model.name")
    for i, row in enumerate(data["rows"]):
        _check(row, (dict,), f"rows[{i}]")
        for key, types in ROW_KEYS.items():
            if key not in row:
                raise ProfileError(f"rows[{i}] is missing {key!r}")
            _check(row[key], types, f"rows[{i}].{key}")
        if row["status"] not in STATUSES:
            raise ProfileError(f"rows[{i}].status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
        later = {k: v for k, v in _spec_defaults().items() if k not in row["spec"]}
        if later:  # fields added to TrainSpec after the file was written: their defaults
            row = data["rows"][i] = {**row, "spec": {**later, **row["spec"]}}
        missing = set(SPEC_FIELDS) - set(row["spec"])
        if missing:
            raise ProfileError(f"rows[{i}].spec is missing {sorted(missing)}")
        if row["status"] == "ok":
            _check(row["peak_allocated_bytes"], (int,), f"rows[{i}].peak_allocated_bytes")
            _check(row["step_s"], _NUMBER, f"rows[{i}].step_s")
            if not all(isinstance(x, _NUMBER) for x in row["losses"]):
                raise ProfileError(f"rows[{i}].losses must be numbers")
    return Profile(
        environment=env,
        model=data["model"],
        settings=data["settings"],
        rows=data["rows"],
        created_utc=data["created_utc"],
        interrupted=bool(data.get("interrupted", False)),
        planned=int(data.get("planned", len(data["rows"]))),
        path=Path(where),
    )


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 profile as version 2 (a new dict; ``data`` is not changed)."""
    rows = data.get("rows")
    if not isinstance(rows, list):
        return {**data, "schema_version": 2}
    migrated = [
        {**row, "spec": {**_V1_SPEC_DEFAULTS, **row["spec"]}}
        if isinstance(row, dict) and isinstance(row.get("spec"), dict)
        else row
        for row in rows
    ]
    return {**data, "schema_version": 2, "rows": migrated}


def _spec_defaults() -> dict[str, Any]:
    """TrainSpec fields with a default. A field added to TrainSpec defaults to the behaviour before
    it existed, so a row written before it was added reads as that default."""
    from lora_budget import records
    from lora_budget.spec import TrainSpec

    out = {}
    for f in records.fields(TrainSpec):
        if f.name in SPEC_FIELDS and f.default is not records.MISSING:
            out[f.name] = f.default
    return out


def load_profile(path: Path) -> Profile:
    """The profile in the file at ``path``, or a ProfileError naming it (a profile holds finite numbers only)."""
    try:
        data = read_json(path, finite=True)  # not JSON, too deep, a huge integer, NaN
    except InputFileError as exc:
        raise ProfileError(str(exc)) from None
    return validate(data, path)


def profile_files(paths: list[Path]) -> list[Path]:
    """The ``*.json`` files under each folder (recursively) and each file given."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():  # a FIFO or device named *.json is listed, then refused by load_profile unread
            out.extend(sorted(p for p in path.rglob("*.json") if not p.name.startswith(".")))
        elif path.exists():
            out.append(path)
        else:
            raise ProfileError(f"{path}: no such file or folder")
    return out


def load_profiles(paths: list[Path]) -> tuple[list[Profile], list[LoadError]]:
    """Every profile that loads, and one error per file that does not."""
    profiles: list[Profile] = []
    errors: list[LoadError] = []
    for path in profile_files(paths):
        try:
            profiles.append(load_profile(path))
        except ProfileError as exc:
            message = str(exc)
            prefix = f"{path}: "
            errors.append(LoadError(path, message[len(prefix) :] if message.startswith(prefix) else message))
    return profiles, errors
