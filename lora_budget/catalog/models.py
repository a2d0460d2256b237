"""The model catalog (models.json) and name resolution: aliases, HF ids, forgiving spellings, files."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from functools import cache, lru_cache

from lora_budget.catalog.shape import SUPPORTED_TYPES, shape_from_config
from lora_budget.core.params import param_count
from lora_budget.errors import LoraBudgetError, UnknownNameError
from lora_budget.spec import ModelRef

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


_HERE = os.path.dirname(os.path.abspath(__file__))
"""The catalog's data files sit beside this module. os.path, not pathlib: a plan of a catalog model
imports neither pathlib nor the Hub module (pathlib's imports, re and urllib.parse among them, are
a tenth of `lora-budget plan`'s start; benchmarks/bench_plan.py cold)."""


def _read(name: str) -> str:
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return f.read()


@lru_cache(maxsize=1)
def catalog() -> tuple[dict[str, Any], ...]:
    """Catalog entries as stored: name, hf_id, family, aliases, source, config, and optional variants.

    ``variants`` are other repositories whose config.json has the same memory-relevant values (instruct /
    chat / quantized checkpoints and mirrors of the same weights), listed explicitly per entry: no
    suffix stripping decides that two sizes or two releases are the same model.
    """
    return tuple(json.loads(_read("models.json"))["models"])


@lru_cache(maxsize=1)
def derived_catalog() -> tuple[dict[str, Any], ...]:
    """Entries of architectures the analytical walk does not model (models_derived.json, the same
    layout): planned from trace-derived records (``core/derived.py``), shipped for those that derive."""
    present = os.path.isfile(os.path.join(_HERE, "models_derived.json"))
    return tuple(json.loads(_read("models_derived.json"))["models"]) if present else ()


def _entries() -> tuple[dict[str, Any], ...]:
    return catalog() + derived_catalog()


@cache
def _spelling() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """``_key``'s patterns: a repo suffix, a v0.1 suffix, a separator. Compiled on first use (re
    compiles a new pattern in Python, about 0.4 ms each): a plan of an exact name never needs them."""
    return re.compile(r"[-_.\s]+(hf|instruct|it|pt|base)$"), re.compile(r"[-_.\s]+v0[.\-_]?1$"), re.compile(r"[-_.\s]")


def _key(text: str) -> str:
    """Forgiving spelling: lower case, separators dropped, common repo suffixes dropped."""
    suffix, v01, separators = _spelling()
    t = text.strip().lower()
    t = t.split("/")[-1]
    t = suffix.sub("", t)
    t = v01.sub("", t) if "mistral" not in t and "mixtral" not in t else t
    return separators.sub("", t)


def _lookup(text: str) -> dict[str, Any] | None:
    """The catalog entry for ``text``: by exact (lower-case) name, alias, HF id or variant of the main
    catalog (``_names``), else by ``_index()``, which also holds the forgiving spellings (``_key``) and
    models_derived.json (about 10 ms to parse, read only when the first misses)."""
    wanted = text.strip().lower()
    entry = _names().get(wanted)
    if entry is None:
        index = _index()
        entry = index.get(wanted) or index.get(_key(text))
    return entry


def spellings(entry: dict[str, Any]) -> tuple[str, ...]:
    """Every name an entry answers to: its name, HF id, aliases and variants (in that order)."""
    return (entry["name"], entry["hf_id"], *entry["aliases"], *entry.get("variants", ()))


@lru_cache(maxsize=1)
def _names() -> dict[str, dict[str, Any]]:
    """Lower-case name, HF id, alias and variant -> main-catalog entry (the first entry that lists it):
    what a plan of a catalog model looks up, without ``_key``'s three substitutions per name."""
    names: dict[str, dict[str, Any]] = {}
    for entry in catalog():
        for name in spellings(entry):
            names.setdefault(name.lower(), entry)
    return names


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    """``_names`` of both catalogs, each name also under its forgiving spelling (``_key``)."""
    index: dict[str, dict[str, Any]] = {}
    for entry in _entries():
        for name in spellings(entry):
            index.setdefault(name.lower(), entry)
            index.setdefault(_key(name), entry)
    return index


@lru_cache(maxsize=1)
def _unmodelled() -> dict[str, str]:
    """Known Hub ids of architectures the planner does not model yet (unmodelled.json): id -> model_type."""
    rows = json.loads(_read("unmodelled.json"))["models"]
    return {row["hf_id"].lower(): row["model_type"] for row in rows}


def _ref(entry: dict[str, Any]) -> ModelRef:
    """The catalog entry's ModelRef, built once per entry (a frozen value; plan() resolves its model per call)."""
    return _catalog_ref(entry["name"])


@cache
def _catalog_ref(name: str) -> ModelRef:
    entry = next((e for e in catalog() if e["name"] == name), None) or next(
        e for e in derived_catalog() if e["name"] == name
    )
    return ModelRef(
        name=entry["name"],
        hf_id=entry["hf_id"],
        source=entry["source"],
        shape=shape_from_config(entry["config"], where=entry["name"]),
        config=entry["config"],
    )


@cache
def _text_tower_ref(name: str) -> ModelRef:
    """The ModelRef of a multimodal entry's text decoder alone: what a text-only variant (the
    entry's ``text_only_variants``, a checkpoint without the vision tower) is."""
    entry = next(e for e in catalog() if e["name"] == name)
    text = entry["config"]["text_config"]
    return ModelRef(
        name=f"{entry['name']} (text decoder)",
        hf_id=entry["hf_id"],
        source=entry["source"],
        shape=shape_from_config(text, where=entry["name"]),
        config=text,
    )


def resolve_model(text: str) -> ModelRef:
    """A config.json path or model directory, a cached HF repo, a catalog name/alias/HF id, or a Hub repo.

    Order: a local path; the local Hugging Face cache (``hub.cached_config``); the catalog; then, unless
    offline, the Hub's ``config.json`` alone (``hub.download_config``, cached for the next run).
    """
    if not isinstance(text, str):
        raise LoraBudgetError(f"model must be a name or a path (str), got {type(text).__name__}")
    if not text or not text.strip():
        raise LoraBudgetError("no model given; pass a catalog name such as 7b or Llama-3.1-8B")
    path = os.path.expanduser(text)
    try:
        local = _exists(path) or os.path.splitext(path.rstrip("/"))[1] == ".json"
    except OSError as exc:  # a name over the file system's limits (ENAMETOOLONG) is no path, and no model
        why = f"not a catalog name or a usable path ({exc.strerror})"
        raise LoraBudgetError(f"unknown model {text[:60]!r}... ({len(text):,} chars): {why}") from None
    if local:
        from pathlib import Path

        return model_from_path(Path(path))
    if "/" in text:  # a Hub repo id has one; only then is the Hub module (pathlib, urllib) imported
        from lora_budget.catalog import hub

        repo = hub.is_repo_id(text)
    else:
        repo = False
    cached = hub.cached_config(text.strip()) if repo else None
    if cached is not None:
        return model_from_path(cached, hf_id=text.strip())
    entry = _lookup(text)
    if entry is not None:
        if text.strip().lower() in {v.lower() for v in entry.get("text_only_variants", ())}:
            return _text_tower_ref(entry["name"])
        return _ref(entry)
    unmodelled = _unmodelled().get(text.strip().lower())
    if unmodelled is not None:
        raise LoraBudgetError(
            f"{text.strip()}: architecture {unmodelled!r} is not modelled yet "
            f"(modelled: {', '.join(SUPPORTED_TYPES)}); see `lora-budget models` for what plans"
        )
    if repo:
        if hub.offline():
            raise UnknownNameError(hub.offline_message(text.strip()))
        return model_from_path(hub.download_config(text.strip()), hf_id=text.strip())
    hint = _closest(text)
    hint = f"; closest: {', '.join(hint)}" if hint else ""
    raise UnknownNameError(f"unknown model {text!r}{hint} (see `lora-budget models`, or pass a config.json path)")


_SIZE = r"(?<![a-z0-9.])(\d+x)?(\d+(?:\.\d+)?)([bm])(?![a-z])"
"""A parameter-size token; compiled by re's own cache on first use (for an unknown name's suggestions)."""


def size_token(text: str) -> str | None:
    """The parameter-size token of a name (``270m``, ``7b``, ``8x7b``, ``0.5b``), normalised, or None."""
    m = re.search(_SIZE, text.split("/")[-1].replace("_", "-"), re.IGNORECASE)
    if m is None:
        return None
    experts, number, unit = m.groups()
    return f"{(experts or '').lower()}{float(number):g}{unit.lower()}"


def _closest(text: str) -> list[str]:
    """Up to three catalog names near ``text``, same-size ones first (``gemma-3-270m`` never gets 27B)."""
    entry_of = {n: e["name"] for e in catalog() for n in (e["name"], *e["aliases"])}
    names = list(entry_of)
    size = size_token(text)
    if size is not None:
        same = [n for n in names if size_token(n) == size]
        names = same or [n for n in names if size_token(n) is None]
    import difflib  # only for an unknown name's suggestions: plan's start does not pay for it

    close = difflib.get_close_matches(text.strip(), names, n=max(1, len(names)), cutoff=0.5)
    if not close:
        keys = difflib.get_close_matches(_key(text), [_key(n) for n in names], n=max(1, len(names)), cutoff=0.5)
        close = sorted((n for n in names if _key(n) in keys), key=lambda n: keys.index(_key(n)))
    # an alias stands for its entry: one suggestion per entry, the closest of its spellings
    first = {}
    for n in close:
        first.setdefault(entry_of[n], n)
    return list(first.values())[:3]


def _exists(path: str) -> bool:
    """Whether ``path`` names a directory or a regular file, as ``Path.is_dir`` / ``is_file`` decide it:
    a missing entry or a component that is not a directory is False, any other OSError (a name over
    the file system's limits) is raised; a name the OS cannot take (an embedded NUL) is False."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:
        return False
    return stat.S_ISDIR(mode) or stat.S_ISREG(mode)


def model_from_path(path: Path, hf_id: str = "") -> ModelRef:
    from lora_budget.loads import read_json

    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise LoraBudgetError(f"{config_path}: no such file (expected a config.json or a model directory)")
    raw = read_json(config_path)  # one line naming the file: unreadable, bad JSON, too deep, a huge integer
    if not isinstance(raw, dict):
        raise LoraBudgetError(f"{config_path}: expected a JSON object")
    return ModelRef(
        name=str(config_path),
        hf_id=hf_id or str(raw.get("_name_or_path", "")),
        source=str(config_path),
        shape=shape_from_config(raw, where=str(config_path)),
        config=raw,
    )


def list_models() -> list[tuple[dict[str, Any], int | None]]:
    """Catalog entries with their exact parameter counts, the trace-derived ones after the analytical
    ones (None: no derived inventory is stored for it, see ``core.derived.stored_param_count``)."""
    from lora_budget.core.derived import stored_param_count

    rows: list[tuple[dict[str, Any], int | None]] = [
        (e, param_count(shape_from_config(e["config"], where=e["name"]))) for e in catalog()
    ]
    return rows + [(e, stored_param_count(e["config"], e["name"])) for e in derived_catalog()]
