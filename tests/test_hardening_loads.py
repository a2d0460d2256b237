"""lora_budget/loads.py, the one guarded reader of users' JSON and YAML, and the output checks that
refuse to replace a file a user saved (baselines, timelines, folders that do not exist)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.fsio import check_folder
from lora_budget.loads import MAX_DEPTH, InputFileError, parse_json, parse_yaml, read_json

TINY = str(Path(__file__).parents[1] / "tests" / "data" / "tiny-llama" / "config.json")


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_depth_limit_is_exact():
    value, depth = parse_json(_nested(MAX_DEPTH), "f"), 0
    while isinstance(value, list):
        value, depth = (value[0] if value else None), depth + 1
    assert depth == MAX_DEPTH == 100
    with pytest.raises(InputFileError, match=r"^f: nested deeper than 100 levels"):
        parse_json(_nested(MAX_DEPTH + 1), "f")
    with pytest.raises(InputFileError, match="nested deeper"):  # past the decoder's own recursion limit
        parse_json(_nested(100_000), "f")
    with pytest.raises(InputFileError, match="nested deeper"):
        parse_yaml("a: " + _nested(MAX_DEPTH + 1), "f.yaml")


def test_integer_digits_limit():
    assert parse_json("1" + "0" * 4299, "f") == 10**4299  # 4,300 digits: Python converts them
    with pytest.raises(InputFileError, match="an integer of 4,301 digits"):
        parse_json("1" + "0" * 4300, "f")
    with pytest.raises(InputFileError, match="cannot be read"):
        parse_yaml("a: 1" + "0" * 4300, "f.yaml")


def test_non_finite_constants_only_where_asked():
    assert parse_json('{"a": NaN}', "f")["a"] != parse_json('{"a": NaN}', "f")["a"]  # NaN != NaN
    for text, name in (('{"a": NaN}', "NaN"), ("[Infinity]", "Infinity"), ("[-Infinity]", "-Infinity")):
        with pytest.raises(InputFileError, match=f"holds {name}, which is not a finite number"):
            parse_json(text, "f", finite=True)


def test_yaml_aliases():
    # shared references are fine; eight levels of nine aliases expand to 9**8 lists: refused unexpanded
    assert parse_yaml("a: &x {k: 1}\nb: *x\nc: [*x, *x]", "f") == {"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}] * 2}
    bomb, prev = "", None
    for name in "abcdefgh":
        bomb += f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else '1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
        prev = name
    with pytest.raises(InputFileError, match="1,000,000 lists and mappings"):
        parse_yaml(bomb, "f.yaml")
    with pytest.raises(InputFileError, match="contains itself"):
        parse_yaml("a: &a [*a]", "f.yaml")


def test_files_that_are_not_regular_are_refused_unread(tmp_path):
    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="not a regular file"):
        read_json(fifo)  # would block forever if it were opened
    with pytest.raises(InputFileError, match="is a folder"):
        read_json(tmp_path)
    (tmp_path / "l1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_json(tmp_path / "l1.json")
    with pytest.raises(InputFileError, match=r"^baseline b: cannot read it"):
        read_json(tmp_path / "missing.json", "baseline b")


def test_a_missing_tree_outside_the_current_folder_is_not_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    with pytest.raises(Exception, match="does not exist; create it first"):
        check_folder(elsewhere / "a" / "b")
    assert not elsewhere.exists()
    assert check_folder("reports/new-model") == tmp_path / "reports" / "new-model"  # inside: made later
    assert not (tmp_path / "reports").exists()  # checking made nothing
    assert check_folder(elsewhere) == elsewhere and not elsewhere.exists()  # one missing level is fine


def test_update_baseline_never_replaces_another_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama"}\n')
    args = ["check", "-m", TINY, "--method", "lora", "--baseline", str(config), "--update-baseline"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "is not a lora-budget baseline; not replaced" in r.stderr
    assert config.read_text() == '{"model_type": "llama"}\n'
    # a baseline, even one cut short, is replaced: --update-baseline is the documented repair
    good = tmp_path / "b.json"
    assert CliRunner().invoke(main, [*args[:-2], str(good), "--update-baseline"]).exit_code == 0
    good.write_text(good.read_text()[:80])
    assert CliRunner().invoke(main, [*args[:-2], str(good), "--update-baseline"]).exit_code == 0


def test_timeline_never_replaces_another_file(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    r = CliRunner().invoke(main, ["trace", "-m", TINY, "--method", "lora", "-s", "16", "--timeline", str(notes)])
    assert r.exit_code == 2 and "is not a timeline CSV; not replaced" in r.stderr
    assert "traced" not in r.stderr and notes.read_text() == "a,b\n1,2\n"
