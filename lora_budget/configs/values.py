"""Reading one key of a config file into a spec value; a bad value is a one-line error naming key and file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lora_budget.configs.keys import classify
from lora_budget.configs.targets import path_targets, regex_targets
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field
from lora_budget.spec import OPTIMIZERS

# transformers' OptimizerNames (training_args.py) and axolotl's optimizer names -> ours.
OPTIMIZER_NAMES: dict[str, str] = {
    "adamw_torch": "adamw_foreach",  # torch.optim.AdamW without fused=True: its foreach path on CUDA
    "adamw_torch_fused": "adamw",
    "adamw_hf": "adamw",
    "adamw_apex_fused": "adamw",
    "adamw": "adamw",
    "adam": "adamw",
    "adamw_bnb_8bit": "adamw8bit",
    "adamw_8bit": "adamw8bit",
    "adam_bnb_8bit": "adamw8bit",
    # torchao AdamW8bit (transformers trainer_optimizer.py, ``adamw_torch_8bit``): 8-bit states in blocks of
    # 256 with an fp32 scale each, the byte count of bitsandbytes' blockwise 8-bit Adam
    "adamw_torch_8bit": "adamw8bit",
    "paged_adamw_32bit": "paged_adamw",
    "paged_adamw": "paged_adamw",
    "paged_adamw_8bit": "paged_adamw8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
    **{name: name for name in OPTIMIZERS},
}

OPTIMIZER_BOUNDS: dict[str, tuple[str, str]] = {
    "adamw_torch_4bit": (
        "adamw8bit",
        "torchao AdamW4bit (transformers trainer_optimizer.py) keeps 4-bit states; planned as 8-bit AdamW, "
        "1 byte per trainable parameter more (an over-estimate)",
    ),
}
"""Optimizers planned as a modelled one whose state is at least as large, with a note."""

PREQUANTIZED = ("-gptq", "-awq", "-aqlm", "-hqq", "-eetq", "-fp8", "-int4", "-int8", "-mxfp4", "-nvfp4")
"""Model-id parts of checkpoints stored quantized (their config.json's quantization_config decides; the id hints)."""


@dataclass
class Reader:
    """One file's keys: which were used, which were ignored, what was mapped to what."""

    path: Path
    data: dict[str, Any]
    fmt: str
    values: dict[str, Any] = field(default_factory=dict)
    """CLI parameter name -> value."""
    sources: dict[str, str] = field(default_factory=dict)
    """CLI parameter name -> the file key it came from."""
    used: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    parallel: str = ""
    """What the file's DeepSpeed / FSDP settings say (``read_parallel``), empty without them."""
    typed: frozenset[str] = frozenset()
    """CLI parameters the user typed: the file's keys for them are not read, so a value the flag replaces
    (a target regex, an unmodelled optimizer) is not an error."""
    skipped: dict[str, str] = field(default_factory=dict)
    """CLI parameter -> the file key a typed flag replaced unread."""
    pattern_targets: str = ""
    """The key whose regular expression gave ``targets`` (kept to the model's linears once it is known)."""
    default_targets: str = ""
    """The absent key whose PEFT per-model default gave ``targets`` (replaced by the model's once it is known)."""
    nested_unknown: list[str] = field(default_factory=list)
    """Keys inside a DeepSpeed JSON or fsdp_config no list names (``configs/nested.py``), as ``where.key``."""

    def typed_over(self, param: str, *keys: str) -> bool:
        """Whether ``param`` was typed; then ``keys`` count as read (replaced by the flag), not validated."""
        if param not in self.typed:
            return False
        present = [k for k in keys if k in self.data]
        self.used.update(keys)
        if present:
            self.skipped.setdefault(param, present[0])
        return True

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def fail(self, key: str, why: str) -> LoraBudgetError:
        return LoraBudgetError(f"{self.path}: {key}: {why}")

    def set(self, param: str, value: Any, key: str) -> None:
        self.values[param] = value
        self.sources[param] = key

    def model(self, key: str) -> None:
        """The model id under ``key``; an id naming a pre-quantized checkpoint (GPTQ, AWQ, ...) gets a note."""
        if (model := self.text(key)) is None:
            return
        self.set("model", model, key)
        if kind := next((k for k in PREQUANTIZED if k in model.lower()), None):
            self.notes.append(
                f"{key}: {model} looks pre-quantized ({kind.strip('-_').upper()}): not modelled, its weights are "
                "planned in the configured dtype (an over-estimate of the frozen base)"
            )

    def positive_int(self, key: str) -> int | None:
        if not self.has(key):
            self.used.add(key)
            return None
        v = self.raw(key)
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise self.fail(key, f"must be a positive integer, got {v!r}")
        return v

    def positive_number(self, key: str) -> float | None:
        if not self.has(key):
            self.used.add(key)
            return None
        v = self.raw(key)
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise self.fail(key, f"must be a positive number, got {v!r}") from None
        if isinstance(v, bool) or not 0 < f < float("inf"):
            raise self.fail(key, f"must be a positive finite number, got {v!r}")
        return f

    def flag(self, key: str) -> bool | None:
        """A boolean key; ``auto`` (axolotl's bf16: auto) counts as true; absent is None."""
        if not self.has(key):
            self.used.add(key)
            return None
        v = self.raw(key)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "auto"):
            return True
        if isinstance(v, str) and v.strip().lower() in ("false", "no", "0"):
            return False
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise self.fail(key, f"must be true or false, got {v!r}")

    def text(self, key: str) -> str | None:
        if not self.has(key):
            self.used.add(key)
            return None
        v = self.raw(key)
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {v!r}")
        return v.strip()

    def optimizer(self, key: str) -> None:
        if self.typed_over("optimizer", key):
            return
        name = self.text(key)
        if name is None:
            return
        ours = OPTIMIZER_NAMES.get(name.lower())
        if name.lower() in OPTIMIZER_BOUNDS:
            ours, why = OPTIMIZER_BOUNDS[name.lower()]
            self.notes.append(f"{key}: {name} not modelled: {why}")
        if ours is None:
            known = ", ".join(sorted(OPTIMIZER_NAMES))
            raise self.fail(key, f"optimizer {name!r} is not modelled; pass --optimizer to plan one of {known}")
        self.set("optimizer", ours, key)

    def targets(self, key: str, all_names: tuple[str, ...] = ("all-linear", "all")) -> None:
        if self.typed_over("targets", key):
            return
        if not self.has(key):
            self.used.add(key)
            return
        v = self.raw(key)
        if isinstance(v, str):
            names = [n.strip() for n in v.split(",") if n.strip()]
        elif isinstance(v, list) and all(isinstance(n, str) for n in v):
            names = [n.strip() for n in v if n.strip()]
        else:
            raise self.fail(key, f"must be a module name, a list of names or all-linear, got {v!r}")
        if not names:
            raise self.fail(key, "is empty")
        if len(names) == 1 and names[0].lower() in all_names:
            self.set("targets", "all-linear", key)
            return
        if isinstance(v, str) and set(v) & set("*()[]|\\^$+?"):
            self._regex_targets(key, v)
            return
        if any(set(n) & set("*()[]|\\^$+?") for n in names):
            raise self.fail(key, f"a list entry is a module name or path, not a pattern ({v!r}); use --targets")
        if any("." in n for n in names):
            names_, dropped = path_targets(names)
            if dropped:
                self.notes.append(f"{key}: {', '.join(dropped)} not planned (only the text decoder is modelled)")
            if not names_:
                raise self.fail(key, "names only vision or projector modules, which are not modelled; use --targets")
            self.notes.append(f"{key}: module paths planned by their last name ({', '.join(names_)}) on every layer")
            names = list(names_)
        self.set("targets", ",".join(names), key)

    def _regex_targets(self, key: str, pattern: str) -> None:
        """A string target with pattern characters is a regular expression PEFT full-matches (configs/targets.py)."""
        try:
            names, partial = regex_targets(pattern)
        except re.error as exc:
            raise self.fail(key, f"not a valid regular expression ({exc}); use --targets") from None
        if not names:
            raise self.fail(
                key, f"the pattern {pattern!r} matches no decoder-layer linear lora-budget knows; use --targets"
            )
        self.set("targets", ",".join(names), key)
        self.pattern_targets = key  # kept to the model's linears once it is known (targets.fit_to_model)
        self.notes.append(f"{key}: read as PEFT matches it: the decoder linears among {', '.join(names)}")
        if partial:
            self.notes.append(
                f"{key}: the pattern adapts {', '.join(partial)} on some layers only; not modelled: planned on every "
                "layer (adapters, their gradients and optimizer state over-planned)"
            )

    def ignored(self) -> tuple[list[str], list[str], list[str]]:
        """(keys not modelled yet, with why; keys with no effect on memory or speed; keys no list names).

        Objective settings (``keys.OBJECTIVE``) count as no effect here: the objective's note reports them.
        """
        unmodelled, rest, unknown = [], [], []
        for key, value in self.data.items():
            if key in self.used:
                continue
            kind, why = classify(key, value)
            if kind == "not-modelled":
                unmodelled.append(f"{key} ({why})")
            elif kind == "unknown":
                unknown.append(key)
            else:
                rest.append(key)
        return unmodelled, rest, unknown
