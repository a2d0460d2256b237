"""The config corpus (tests/data/configs/corpus/, sources in MANIFEST.tsv) planned file by file, and its table.

``python tests/configs_corpus.py`` prints the table: per tool, the configs, how many were read, refused
(by reason), planned, planned with every key read and modelled, planned with gaps the notes report,
misread (a key no list in ``lora_budget/configs/keys.py`` names, or a hand-verified setting read wrong),
and the hand-verified ones (tests/data/configs/verified.json) that match.

A model the catalog does not resolve yet (the any-model work is elsewhere) is planned with ``--model``
set to a catalog model of the same family, so the reading of every other key is still exercised; a
file that names no model is planned with the model its tool documents, where one does.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.cli.plan_cmd import plan_cmd
from lora_budget.configs import load_config
from lora_budget.errors import LoraBudgetError

DATA = Path(__file__).parent / "data" / "configs"
CORPUS = DATA / "corpus"
ROWS = [line.split("\t") for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines() if not line.startswith("#")]
VERIFIED = json.loads((DATA / "verified.json").read_text()) if (DATA / "verified.json").is_file() else {}

FAMILY = (
    ("mixtral", "8x7b"),
    ("llama-2", "7b"),
    ("llama2", "7b"),
    ("llama-3.2-1b", "1b"),
    ("llama-3.2-3b", "3b"),
    ("llama", "8b"),
    ("qwen3", "qwen3-32b"),
    ("qwen", "qwen2.5-7b"),
    ("mistral", "mistral-7b"),
    ("gemma-3", "gemma3-4b"),
    ("gemma3", "gemma3-4b"),
    ("gemma", "gemma2-2b"),
    ("phi", "phi3-mini"),
    ("falcon-7b", "falcon-7b"),
    ("falcon-40b", "falcon-7b"),
    ("olmo", "olmo2-7b"),
    ("gpt2", "gpt2"),
)
"""Substring of a model id -> a catalog model of that family (first match wins; else Llama-3.1-8B)."""

BY_MODULE = (("query_key_value", "falcon-7b"), ("c_attn", "gpt2"), ("c_fc", "gpt2"))
"""A target module name -> a catalog model that has it: the stand-in when the family's lacks the file's targets
(Pythia and GPT-NeoX name their attention query_key_value, as Falcon does; Cerebras-GPT is GPT-2 shaped)."""

NOT_LM = ("flux", "stable-diffusion", "sdxl")
"""Model ids of image generators: no language model to stand in for them."""

BASE_BY_FOLDER = {"peft/method_comparison/MetaMathQA/": "3b"}
"""Files that name no model whose tool documents one: PEFT's MetaMathQA experiments train
meta-llama/Llama-3.2-3B (method_comparison/MetaMathQA/default_training_params.json, model_id)."""

_UNRESOLVED = re.compile(
    r"unknown model|architecture .* is not modelled yet|not a causal LM|cannot read .*config|"
    r"truncated copy cannot stand|transformers cannot build|no derived coefficients for it|"
    r"the trace failed in|shape depends on the data|alike decoder layers found"
)
"""A model the planner cannot plan yet (the any-model issue): the file is planned with a stand-in."""

REASONS = (
    ("peft_type: only LORA", "adapter type not modelled"),
    ("finetuning_type:", "method not modelled"),
    ("peft_config.name:", "method not modelled"),
    ("adapter:", "method not modelled"),
    ("optimizer", "optimizer not modelled"),
    ("names no model", "no model named"),
    ("flash_attn: must be", "value the tool itself refuses"),
    ("does not exist in", "model unresolved: the stand-in lacks its target modules"),
    ("unsupported config format", "not a training config"),
    ("is larger than", "LoRA rank above a 1-wide MoE gate (PEFT allows it; the planner refuses)"),
    ("leaves no prompt", "GRPO completion longer than the sequence (objective reading)"),
    ("unknown model", "model not a causal LM"),
    ("target_modules", "targets not modelled"),
)
"""Substring of a refusal -> its reason in the table."""

SETTINGS = (
    "method",
    "rank",
    "alpha",
    "targets",
    "dtype",
    "quant",
    "double_quant",
    "optimizer",
    "batch_size",
    "seq_len",
    "grad_ckpt",
    "grad_accum",
    "strategy",
    "offload",
    "attn",
    "loss",
    "lora_dropout",
    "framework",
    "kbit_prep",
    "eval_batch_size",
    "gpus",
)
"""The memory-relevant settings each hand-verified config pins."""

DEFAULTS = {p.name: p.default for p in plan_cmd.params}
"""What plan uses for a setting the file leaves to lora-budget (its option defaults)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    path: str
    tool: str
    kind: str
    """planned, refused or traceback."""
    read: bool = True
    """load_config read the file (a refusal may still come later, from the plan)."""
    why: str = ""
    """The refusal's line, or the traceback's exception."""
    reason: str = ""
    gaps: bool = False
    """The notes report a key as not modelled."""
    unknown: tuple[str, ...] = ()
    wrong: tuple[str, ...] = ()
    """Hand-verified settings the reader got wrong (``setting: read X, expected Y``)."""
    verified: bool = False
    objective: str = "sft"


def tool_of(path: str) -> str:
    """The table's row: the repository's folder, with LLaMA-Factory v1, accelerate and DeepSpeed files apart."""
    if "/examples/v1/" in path:
        return "llamafactory-v1"
    if "/accelerate" in path:
        return "accelerate"
    if "deepspeed" in path.split("/")[-2]:
        return "deepspeed"
    return path.split("/")[0]


def _plan(path: Path, *extra: str):
    return CliRunner().invoke(main, ["plan", "--config", str(path), "--json", *extra], catch_exceptions=True)


def effective(values: dict, setting: str):
    """The value plan uses: the file's, else lora-budget's option default (an unnamed optimizer: the
    framework's, as ``TrainSpec`` resolves it)."""
    got = values.get(setting, DEFAULTS.get(setting))
    if setting == "optimizer" and got is None:
        from lora_budget.spec import default_optimizer

        got = default_optimizer(*(effective(values, s) for s in ("framework", "transformers", "torch")))
    return got


def check_verified(path: str, values: dict) -> tuple[str, ...]:
    expected = VERIFIED.get(path, {}).get("expect", {})
    wrong = []
    for setting, (value, _why) in expected.items():
        got = effective(values, setting)
        if got != value and not (isinstance(value, float) and isinstance(got, float) and abs(got - value) < 1e-9):
            wrong.append(f"{setting}: read {got!r}, expected {value!r}")
    return tuple(wrong)


def classify(rel: str) -> Outcome:
    path = CORPUS / rel
    tool = tool_of(rel)
    try:
        loaded = load_config(path)
    except LoraBudgetError as exc:
        loaded = None
        first_error = str(exc)
    r = _plan(path)
    if r.exit_code != 0 and loaded is not None and (_UNRESOLVED.search(r.output) or "names no model" in r.output):
        model = str(loaded.values.get("model", "")).lower()
        base = next((m for folder, m in BASE_BY_FOLDER.items() if rel.startswith(folder)), None)
        base = base or ("8b" if loaded.format in ("deepspeed", "accelerate") else None)  # they never name one
        family = base or next((ours for key, ours in FAMILY if key in model), "8b")
        if base or (model and not any(word in model for word in NOT_LM)):
            r = _plan(path, "--model", family)
            missing = re.search(r"target module '([^']+)' does not exist", r.output)
            other = next((m for name, m in BY_MODULE if missing and missing.group(1) == name), None)
            if other:
                r = _plan(path, "--model", other)
    if (r.exception is not None and not isinstance(r.exception, SystemExit)) or "internal error" in r.output:
        why = repr(r.exception) if r.exception is not None and not isinstance(r.exception, SystemExit) else r.output
        return Outcome(path=rel, tool=tool, kind="traceback", why=why.strip(), read=loaded is not None)
    if r.exit_code != 0:
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        why = errors[-1] if errors else (first_error if loaded is None else r.output.strip())
        reason = next((label for text, label in REASONS if text in why), "other")
        return Outcome(path=rel, tool=tool, kind="refused", why=why, reason=reason, read=loaded is not None)
    assert loaded is not None
    gaps = bool(loaded.unmodelled) or any("not modelled" in n for n in loaded.notes)
    return Outcome(
        path=rel,
        tool=tool,
        kind="planned",
        gaps=gaps,
        unknown=loaded.unknown,
        wrong=check_verified(rel, loaded.values),
        verified=rel in VERIFIED,
        objective=loaded.objective,
    )


def table(outcomes: list[Outcome]) -> str:
    tools = sorted({o.tool for o in outcomes})
    head = (
        "tool",
        "configs",
        "read OK",
        "refused",
        "planned",
        "all read+modelled",
        "gaps reported",
        "misread",
        "verified OK",
        "non-SFT",
        "traceback",
    )
    rows = []
    for tool in [*tools, "total"]:
        mine = [o for o in outcomes if tool in (o.tool, "total")]
        planned = [o for o in mine if o.kind == "planned"]
        misread = [o for o in planned if o.unknown or o.wrong]
        verified = [o for o in planned if o.verified]
        rows.append(
            (
                tool,
                len(mine),
                sum(1 for o in mine if o.read),
                sum(1 for o in mine if o.kind == "refused"),
                len(planned),
                sum(1 for o in planned if not o.gaps and o not in misread),
                sum(1 for o in planned if o.gaps and o not in misread),
                len(misread),
                f"{sum(1 for o in verified if not o.wrong)}/{len(verified)}",
                sum(1 for o in planned if o.objective != "sft"),
                sum(1 for o in mine if o.kind == "traceback"),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    reasons = Counter((o.tool, o.reason) for o in outcomes if o.kind == "refused")
    lines.append("")
    lines.append("refused, by reason:")
    lines += [f"  {tool}: {reason}: {n}" for (tool, reason), n in sorted(reasons.items())]
    return "\n".join(lines)


def run_all() -> list[Outcome]:
    return [classify(row[0]) for row in ROWS]


if __name__ == "__main__":
    outcomes = run_all()
    print(table(outcomes))
    if "-v" in sys.argv:
        for o in outcomes:
            if o.kind != "planned" or o.unknown or o.wrong:
                print(o.path, o.kind, o.reason, o.why[:200], o.unknown, o.wrong)
