"""The README's example output is what the command prints today, and its set-up commands are the two CI runs."""

from pathlib import Path

from click.testing import CliRunner

from lora_budget.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_example_output_is_current():
    marker = "`lora-budget plan --model 7b --gpu 24GB`:\n\n```\n"
    start = README.index(marker) + len(marker)
    shown = README[start : README.index("```", start)]
    result = CliRunner().invoke(main, ["plan", "--model", "7b", "--gpu", "24GB"], catch_exceptions=False)
    assert result.exit_code == 0
    assert shown == result.stdout


def test_setup_commands():
    assert "pip install -e . && lora-budget plan --model 7b --gpu 24GB" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    test_command = 'pip install torch==2.13.0 && pip install -e ".[torch,report,test]" && python -m pytest -q'
    assert test_command in README
    assert test_command.replace("pip install", "pip install -q") in ci  # CI runs it quietly
