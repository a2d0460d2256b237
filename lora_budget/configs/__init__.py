"""Training configs users already have (axolotl, LLaMA-Factory, TRL, PEFT, config.json) as spec options.

``load_config(path)`` returns the options a file sets, keyed by CLI parameter name (``seq_len``,
``rank``, ...), where each came from, and which keys were ignored. The CLI applies them under
``--config`` (``lora_budget/cli/options.py``); flags the user typed win over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_budget.configs.formats import MAPPERS, MODEL_KEYS
from lora_budget.configs.objectives import objective, objective_note, objective_values
from lora_budget.configs.read import FORMAT_NAMES, read_file
from lora_budget.configs.values import Reader
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    path: str
    format: str
    """One of axolotl, llamafactory, trl, peft, hf_config."""
    values: dict[str, Any]
    """CLI parameter name -> value (``method``, ``model``, ``seq_len``, ``batch_size`` as text, ...)."""
    sources: dict[str, str]
    """CLI parameter name -> the file key it was read from."""
    unmodelled: tuple[str, ...]
    """Keys that change memory or speed in ways not modelled yet (DoRA, Unsloth, ...), with why."""
    ignored: tuple[str, ...]
    """Keys with no effect on a single GPU's memory or speed (learning rate, datasets, logging, ...)."""
    notes: tuple[str, ...]
    """Remarks about how values were read (tool defaults applied, values planned differently)."""
    parallel: str = ""
    """What the file's DeepSpeed / FSDP settings say (``deepspeed: ZeRO-3 ... read from ds.json``), or empty."""
    objective: str = "sft"
    """The training objective the file names (``sft``, ``dpo``, ``grpo``, ``reward``, ...); only SFT is modelled."""
    skipped: dict[str, str] = field(default_factory=dict)
    """CLI parameter -> file key left unread because the user typed that flag (it replaces the value)."""
    unknown: tuple[str, ...] = ()
    """Keys no list in ``configs/keys.py`` names: their effect on memory is unchecked (never called no effect)."""
    pattern_targets: str = ""
    """The key whose regular expression gave ``targets``: keep those the model has (``targets.fit_to_model``)."""
    default_targets: str = ""
    """The absent key whose PEFT per-model default gave ``targets`` (``targets.peft_default`` applies the model's)."""

    @property
    def model_key(self) -> str:
        """The key this format names its model with (empty for a DeepSpeed JSON, which names none)."""
        return MODEL_KEYS.get(self.format, "")

    def check_model(self) -> None:
        """Raise a one-line error when a format that names its model does not; the caller skips it under --model."""
        if self.format in ("deepspeed", "accelerate"):  # these formats never name one
            raise LoraBudgetError(f"{self.path}: a {self.format_name} names no model; pass --model (and --method)")
        if self.model_key and "model" not in self.values:
            raise LoraBudgetError(
                f"{self.path}: no {self.model_key}: the file names no model; add {self.model_key}: <model> "
                "or pass --model"
            )

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES[self.format]

    def describe(self, overridden: tuple[str, ...] = (), held: tuple[str, ...] = ()) -> list[str]:
        """Human lines for ``notes``: what was read, what the command line overrode, what was ignored.

        ``held``: settings read but not applied (a sharded strategy without ``--gpus``).
        """
        read = ", ".join(
            f"{key} -> {_flag(param, self.values[param])}"
            for param, key in self.sources.items()
            if param not in overridden and param not in held
        )
        lines = [f"config: {self.path} read as {self.format_name}: {read or 'nothing used'}"]
        if overridden:
            lines.append(
                "config: the command line overrode " + ", ".join(f"--{p.replace('_', '-')}" for p in overridden)
            )
        if held:
            lines.append(
                f"config: {self.parallel}; the GPU count comes from your launcher: add --gpus N to plan it per GPU "
                "(planned on 1 GPU, unsharded, until then)"
            )
        lines += [f"config: {n}" for n in self.notes]
        if self.unmodelled:
            lines.append("config: not modelled yet, ignored: " + "; ".join(self.unmodelled))
        if self.ignored:
            lines.append("config: ignored (no effect on memory or speed): " + ", ".join(self.ignored))
        if self.unknown:
            lines.append(
                "config: keys lora-budget does not know, ignored (check they do not change memory): "
                + ", ".join(self.unknown)
            )
        return lines


def _flag(param: str, value: Any) -> str:
    """How the user would type this setting: ``--grad-ckpt``, ``--no-double-quant``, ``--epochs 3``."""
    name = param.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    if isinstance(value, float):
        return f"--{name} {value:g}"
    return f"--{name} {value}"


def load_config(path: str | Path, typed: frozenset[str] = frozenset()) -> LoadedConfig:
    """Read ``path`` and map its keys; raises LoraBudgetError (one line naming file and key) on bad input.

    ``typed``: CLI parameters the user gave; their keys are not read, so a value a flag replaces is no error.
    """
    data, fmt = read_file(path)
    reader = Reader(path=Path(path), data=data, fmt=fmt, typed=typed)
    MAPPERS[fmt](reader)
    goal, goal_key = objective(fmt, data)
    if goal != "sft":
        reader.used.add(goal_key)
        reader.notes.append(objective_note(goal, goal_key))
        method = str(reader.values.get("method", "lora"))
        values, read = objective_values(goal, data, method)
        reader.used.update(read)
        for param, value in values.items():
            if param in typed or (param == "seq_len" and "seq_len" in reader.values):
                continue
            source = {
                "objective": goal_key,
                "seq_len": "max_prompt_length + max_completion_length",
                "generations": "num_generations",
                "completion_len": "max_completion_length",
                "vllm": "use_vllm",
                "reference": "beta" if goal == "grpo" else "precompute_ref_log_probs",
            }
            reader.set(param, value, source.get(param, param))
    unmodelled, ignored, unknown = reader.ignored()
    return LoadedConfig(
        path=str(path),
        format=fmt,
        values=dict(reader.values),
        sources=dict(reader.sources),
        unmodelled=tuple(unmodelled),
        ignored=tuple(ignored),
        notes=tuple(reader.notes),
        parallel=reader.parallel,
        objective=goal,
        skipped=dict(reader.skipped),
        unknown=(*unknown, *reader.nested_unknown),
        pattern_targets=reader.pattern_targets,
        default_targets=reader.default_targets,
    )


__all__ = ["LoadedConfig", "load_config"]
