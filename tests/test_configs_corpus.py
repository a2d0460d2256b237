"""Every config of the corpus (tests/data/configs/corpus/, sources in its MANIFEST.tsv) is planned or refused
in one line naming the reason: never a traceback.

A model the catalog does not resolve yet (the any-model work is elsewhere) is planned with ``--model``
set to a catalog model of the same family, so the reading of every other key is still exercised.
"""

import re
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config

CORPUS = Path(__file__).parent / "data" / "configs" / "corpus"
ROWS = [line.split("\t") for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines() if not line.startswith("#")]

# substring of a model id -> a catalog model of that family (checked in order)
FAMILY = (
    ("mixtral", "8x7b"),
    ("llama-2", "7b"),
    ("llama2", "7b"),
    ("llama", "8b"),
    ("qwen3", "qwen3-32b"),
    ("qwen", "qwen2.5-7b"),
    ("mistral", "mistral-7b"),
    ("gemma-3", "gemma3-4b"),
    ("gemma3", "gemma3-4b"),
    ("gemma", "gemma2-2b"),
    ("phi", "phi3-mini"),
    ("falcon", "falcon-7b"),
    ("olmo", "olmo2-7b"),
    ("gpt2", "gpt2"),
)
_UNRESOLVED = re.compile(r"unknown model|architecture .* is not modelled yet")


def _plan(path: Path, *extra: str):
    return CliRunner().invoke(main, ["plan", "--config", str(path), "--json", *extra], catch_exceptions=True)


def _classify(path: Path) -> tuple[str, str]:
    r = _plan(path)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return "traceback", repr(r.exception)
    if r.exit_code == 0:
        return "plan", ""
    if _UNRESOLVED.search(r.output):
        model = str(load_config(path).values["model"]).lower()
        family = next((ours for key, ours in FAMILY if key in model), "8b")
        r = _plan(path, "--model", family)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            return "traceback", repr(r.exception)
        if r.exit_code == 0:
            return "plan (family model)", ""
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    return "refuse", errors[-1] if errors else r.output


def test_every_corpus_config_plans_or_is_refused_in_one_line():
    assert len(ROWS) >= 300 and len({row[1] for row in ROWS}) >= 5
    results = {row[0]: _classify(CORPUS / row[0]) for row in ROWS}
    tracebacks = {f: why for f, (kind, why) in results.items() if kind == "traceback"}
    assert not tracebacks
    for f, (kind, why) in results.items():
        if kind == "refuse":
            assert why.startswith("Error: ") and ": " in why[7:], (f, why)  # names file and key, then why
    counts = Counter((f.split("/")[0], kind) for f, (kind, _) in results.items())
    print(sorted(counts.items()))
