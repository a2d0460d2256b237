"""The README's examples are what the commands do today.

- every output block (the 7B example, the 70B excerpt) equals, or is a run of lines of, the
  command's real output;
- every ``lora-budget ...`` line in a code block parses with the command's own options (a
  renamed or removed flag fails here), and the numbers in the ``models`` / ``gpus`` comments are
  the catalogs' counts;
- the Python example runs and the set-up commands are the two CI runs;
- the figures the prose reads off the 7B example are that output's numbers, rounded.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import COMMANDS, main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _code_blocks() -> list[str]:
    """Fenced blocks (not ```python) and 4-space indented blocks."""
    fenced = re.findall(r"^```([a-z]*)\n(.*?)^```", README, flags=re.S | re.M)
    indented = re.findall(r"(?:^\n)((?:^    .*\n)+)", README, flags=re.M)
    return [body for lang, body in fenced if lang == ""] + [re.sub(r"^    ", "", b, flags=re.M) for b in indented]


def _command_lines() -> list[str]:
    lines = []
    for block in _code_blocks():
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("lora-budget "):
                lines.append(line)
            lines += [part.strip() for part in line.split("&&")[1:] if part.strip().startswith("lora-budget ")]
    return lines


def test_example_output_is_current():
    marker = "`lora-budget plan --model 7b --gpu 24GB`:\n\n```\n"
    start = README.index(marker) + len(marker)
    shown = README[start : README.index("```", start)]
    assert shown == _run(["plan", "--model", "7b", "--gpu", "24GB"])


def test_the_70b_excerpt_is_a_run_of_the_real_output():
    marker = "    $ lora-budget plan --model 70b --gpu a100-80gb\n"
    start = README.index(marker) + len(marker)
    excerpt = []
    for line in README[start:].splitlines():
        if not line.startswith("    "):
            break
        excerpt.append(line[4:])
    real = _run(["plan", "--model", "70b", "--gpu", "a100-80gb"]).splitlines()
    assert len(excerpt) >= 2
    runs = [real[i : i + len(excerpt)] for i in range(len(real) - len(excerpt) + 1)]
    assert excerpt in runs, "\n".join(real)


def test_the_prose_reads_the_7b_example():
    """'full fine-tuning ... needs 50.2 GiB', 'LoRA ... 30.5 GiB', 'QLoRA needs 21.5 GiB ... 0.8 GiB
    to spare', and rtx4090 'gives those 1.65 GiB back' (24 GiB - 24 GB)."""
    out = json.loads(_run(["plan", "--model", "7b", "--gpu", "24GB", "--json"]))
    gib = {m["method"]: m["peak_bytes"] / 2**30 for m in out["methods"]}
    headroom = {m["method"]: m["headroom_bytes"] / 2**30 for m in out["methods"]}
    prose = README[README.index("Read it as:") :][:700]
    assert f"needs {gib['full']:.1f} GiB" in prose
    assert f"needs {gib['lora']:.1f} GiB" in prose
    assert f"QLoRA needs {gib['qlora']:.1f} GiB" in prose and f"with {headroom['qlora']:.1f} GiB to spare" in prose
    assert f"gives those {(24 * 2**30 - 24 * 10**9) / 2**30:.2f} GiB back" in prose


@pytest.mark.parametrize("line", _command_lines())
def test_every_example_command_parses(line):
    """Each example parses with its command's options: names, choices and number types (nothing runs)."""
    words = shlex.split(line.split("  #")[0].split(" # ")[0].split(" | ")[0])[1:]
    assert words and words[0] in COMMANDS, line
    module, attr = COMMANDS[words[0]].split(":")
    command = getattr(__import__(module, fromlist=[attr]), attr)
    command.make_context(words[0], words[1:])  # raises click.UsageError on an unknown or bad option


def test_the_catalog_counts_in_the_comments():
    models = json.loads(_run(["models", "--json"]))
    variants = sum(
        len(e.get("variants", [])) for e in json.loads((ROOT / "lora_budget/catalog/models.json").read_text())["models"]
    )
    families = len({m["family"] for m in models})
    gpus = json.loads(_run(["gpus", "--json"]))
    assert f"lora-budget models     # {len(models)} models (+{variants} variant ids), {families} families" in README
    assert f"lora-budget gpus       # {len(gpus)} GPUs" in README


def test_the_python_example_runs():
    block = README[README.index("From Python:") :]
    code = block[block.index("```python\n") + len("```python\n") : block.index("```", block.index("```python\n") + 9)]
    code = code.replace("result.to_frame()", "result.to_frame() if _has_pandas else None")
    try:
        import pandas  # noqa: F401

        has_pandas = True
    except ImportError:
        has_pandas = False
    namespace = {"_has_pandas": has_pandas, "print": lambda *a: None}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert [m.method for m in namespace["result"].methods] == ["full", "lora", "qlora"]


def test_setup_commands():
    assert "pip install -e . && lora-budget plan --model 7b --gpu 24GB" in README
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = 'pip install torch==2.13.0 && pip install -e ".[torch,report,test]" && python -m pytest -q'
    assert test_command in README
    assert test_command.replace("pip install", "pip install -q") in ci  # CI runs it quietly
