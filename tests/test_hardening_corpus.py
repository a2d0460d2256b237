"""The corpus of bad inputs under tests/data/bad/: each file, read by the command that takes it,
gives exactly one error line holding the fragments EXPECTED.tsv lists (the file's name, the key
and the value it holds), and the exit code listed there; never a traceback.

The fragments are facts about each file (its name, the key it breaks, the value written in it),
not text copied from the program's output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main

ROOT = Path(__file__).parents[1]
BAD = ROOT / "tests" / "data" / "bad"
TINY = str(ROOT / "tests" / "data" / "tiny-llama" / "config.json")


def _rows() -> list[tuple[str, int, list[str]]]:
    rows = []
    for line in (BAD / "EXPECTED.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, code, fragments = line.split("\t")
            rows.append((name, int(code), [f.strip() for f in fragments.split("|")]))
    return rows


ROWS = _rows()


def _command(name: str, path: str, tmp: Path) -> list[str]:
    folder = name.split("/")[0] if "/" in name else ""
    if folder in ("model", "huge-int"):
        return ["plan", "-m", path, "-g", "24GB"]
    if folder in ("configs", ""):
        return ["plan", "--config", path]
    if folder == "profiles":
        return ["report", "-m", TINY, "--profiles", path, "--out", str(tmp / "report"), "--format", "svg"]
    if folder == "baselines":
        return ["check", "--baseline", path, "-m", TINY, "--method", "lora"]
    if folder == "prices":
        return ["search", "-m", "7b", "--tokens", "1M", "--gpus-available", "1x h100", "--price-file", path]
    raise AssertionError(f"no command for {name}: add its folder to _command")


def test_every_corpus_file_has_an_expectation():
    listed = {name for name, _, _ in ROWS}
    present = {str(p.relative_to(BAD)) for p in BAD.rglob("*") if p.is_file() and p.name != "EXPECTED.tsv"}
    assert present == listed


@pytest.mark.parametrize(("name", "code", "fragments"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(tmp_path, monkeypatch, name, code, fragments):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, _command(name, str(BAD / name), tmp_path))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == code and len(errors) == 1, result.output
    missing = [f for f in fragments if f not in errors[0]]
    assert missing == [], errors[0]
    assert len(errors[0]) <= 1000  # a message listing hundreds of names is cut (cli/errors.LINE_LIMIT)


def test_bad_profiles_do_not_stop_the_listing(tmp_path):
    """`profiles` over a folder of the bad profiles and one good one: the good one is listed, and
    each bad one is one line naming it (exit 1: some files did not load)."""
    for p in (BAD / "profiles").iterdir():
        shutil.copy(p, tmp_path / p.name)
    good = next((ROOT / "profiles").rglob("*.json"))
    shutil.copy(good, tmp_path / "good.json")
    result = CliRunner().invoke(main, ["profiles", str(tmp_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and "good.json" in result.stdout
    bad = sorted(p.name for p in (BAD / "profiles").iterdir())
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(bad)
    assert [name for name in bad if not any(f"{tmp_path / name}:" in line for line in lines)] == []
