"""Bad input and faults: one line and exit 2/1, never a traceback; nothing a user saved replaced.

Expected values here are facts about the inputs (a FIFO stays a FIFO, a 0600 file stays 0600,
the shipped profile's rows are its own numbers), not outputs copied from the code under test.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.cli.errors import ECHO_LIMIT, shorten
from lora_budget.errors import LoraBudgetError
from lora_budget.fsio import check_destination, claim_new, write_atomic

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "data" / "tiny-llama" / "config.json"
BAD = ROOT / "tests" / "data" / "bad"


def _run(args: list[str]):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- the writer ---------------------------------------------------------------------------------


def test_writer_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("old")
    path.chmod(0o600)
    write_atomic(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_writer_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_writer_refuses_a_fifo_and_a_folder_and_leaves_them(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(LoraBudgetError, match="not a regular file"):
        write_atomic(fifo, "x")  # returns at once: a FIFO opened for writing would block
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(LoraBudgetError, match="a folder"):
        write_atomic(tmp_path, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temp file left behind


def test_writer_does_not_create_missing_folders(tmp_path):
    with pytest.raises(LoraBudgetError, match="does not exist"):
        write_atomic(tmp_path / "no" / "such" / "x.csv", "x")
    assert not (tmp_path / "no").exists()


def test_a_255_byte_name_limit_is_one_line(tmp_path):
    with pytest.raises(LoraBudgetError, match="File name too long|over 255 bytes"):
        check_destination(tmp_path / ("a" * 300 + ".json"))


def test_claim_is_exclusive(tmp_path):
    claim_new(tmp_path / "p.json")
    with pytest.raises(LoraBudgetError, match="already exists"):
        claim_new(tmp_path / "p.json")


def test_check_never_writes_to_or_through_a_fifo(tmp_path):
    fifo = tmp_path / "baseline.json"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(fifo)
    for target in (fifo, link):
        r = _run(["check", "--baseline", str(target), "-m", str(TINY), "--method", "lora", "--update-baseline"])
        assert r.exit_code == 2 and "not a regular file" in _error_line(r)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()


def test_check_unwritable_baseline_fails_before_measuring(tmp_path):
    r = _run(["check", "--baseline", str(tmp_path / "none" / "b.json"), "-m", "7b", "--update-baseline"])
    assert r.exit_code == 2 and "does not exist" in _error_line(r) and "running" not in r.stderr


# --- the error boundary -------------------------------------------------------------------------


def test_deep_json_config_is_one_line():
    # 100,000 nested lists: over Python's recursion limit (1,000) in json.loads
    r = _run(["plan", "--config", str(BAD / "deep.json"), "-g", "24GB"])
    assert r.exit_code == 2, r.output
    assert "deep.json: nested deeper than 100 levels" in _error_line(r)


def test_unexpected_error_asks_for_a_report_and_debug_shows_it(monkeypatch):
    import lora_budget.api

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(lora_budget.api, "plan", boom)
    r = _run(["plan", "-m", "7b", "-g", "24GB"])
    assert r.exit_code == 1 and "please report" in _error_line(r) and "simulated bug" in r.stderr
    debug = CliRunner().invoke(main, ["--debug", "plan", "-m", "7b", "-g", "24GB"])
    assert isinstance(debug.exception, RuntimeError)  # the traceback is there to see


def test_long_inputs_are_cut_in_error_lines():
    r = _run(["plan", "-m", "x" * 5000, "-g", "24GB"])
    line = _error_line(r)
    assert r.exit_code == 2 and len(line) < 1000 and "5,000 chars" in line
    assert shorten("y" * (ECHO_LIMIT + 1)).count("y") < ECHO_LIMIT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset-tokens", "1M", "--epochs", "inf"], "--epochs must be a finite number"),
        (["--dataset-tokens", "1M", "--epochs", "nan"], "--epochs must be a finite number"),
        (["--tokens", "1M", "--price", "inf", "--json"], "--price must be a finite number"),
        (["--gpus", "16", "--strategy", "fsdp", "--inter-node-gbps", "1e-300"], "--inter-node-gbps"),
        (["--overhead", "1" + "0" * 300 + "B"], "over 1 EiB"),
    ],
)
def test_non_finite_and_huge_numbers(args, message):
    r = _run(["plan", "-m", "7b", "-g", "24GB", *args])
    assert r.exit_code == 2 and message in _error_line(r)
    assert "Infinity" not in r.stdout


def test_check_tolerance_nan(tmp_path):
    r = _run(["check", "--baseline", str(tmp_path / "b.json"), "-m", "7b", "--tolerance", "nan", "--update-baseline"])
    assert r.exit_code == 2 and "--tolerance" in _error_line(r)


def test_zero_baseline_is_refused_not_plus_inf(tmp_path):
    base = tmp_path / "b.json"
    assert (
        _run(["check", "--baseline", str(base), "-m", str(TINY), "--method", "lora", "--update-baseline"]).exit_code
        == 0
    )
    data = json.loads(base.read_text())
    for entry in data["entries"]:
        entry["categories"] = dict.fromkeys(entry["categories"], 0)
        entry["peak_bytes"] = 0
    base.write_text(json.dumps(data))
    r = _run(["check", "--baseline", str(base), "-m", str(TINY), "--method", "lora"])
    assert r.exit_code == 2 and "peak_bytes is 0" in r.stderr and "inf" not in r.output


def test_validate_models_comma_is_an_error():
    r = _run(["validate", "--models", ","])
    assert r.exit_code == 2 and "names no architecture" in _error_line(r)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_attention_heads", 0, "num_attention_heads must be a positive integer"),
        ("hidden_size", "abc", "hidden_size must be a positive integer"),
        ("num_hidden_layers", -2, "num_hidden_layers must be a positive integer"),
        ("vocab_size", -1, "vocab_size must be a positive integer"),
        ("hidden_size", 1.5, "hidden_size must be a positive integer"),
        # tiny-llama has 4 query heads: 3 kv heads cannot each serve a whole group
        ("num_key_value_heads", 3, "must divide num_attention_heads"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, key, value, message):
    config = json.loads(TINY.read_text())
    config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    r = _run(["plan", "-m", str(path), "-g", "24GB"])
    assert r.exit_code == 2 and message in _error_line(r), r.output


def test_a_5000_digit_integer_is_one_line():
    # Python refuses int("...") over 4,300 digits (CVE-2020-10735); the file says vocab_size: 1 followed by 5,000 zeros
    r = _run(["plan", "-m", str(BAD / "huge-int" / "config.json"), "-g", "24GB"])
    assert r.exit_code == 2, r.output
    assert "huge-int/config.json: holds an integer of 5,001 digits (at most 4,300)" in _error_line(r)


def test_moe_top_k_over_experts(tmp_path):
    from lora_budget.catalog.shape import shape_from_config

    moe = {
        "model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 100, "num_local_experts": 4,
        "num_experts_per_tok": 5,
    }  # fmt: skip
    with pytest.raises(LoraBudgetError, match=r"num_experts_per_tok \(5\) exceeds the number of experts \(4\)"):
        shape_from_config(moe, "moe")


def test_api_misspelt_keyword_names_it():
    import lora_budget

    with pytest.raises(LoraBudgetError, match=r"unknown keyword 'method' \(did you mean 'methods'\?\).*seq_len"):
        lora_budget.plan("8b", "h100", method="lora")


# --- profiles -----------------------------------------------------------------------------------


def test_the_shipped_profile_loads():
    from lora_budget.profile.store import load_profiles

    profiles, errors = load_profiles([ROOT / "profiles"])
    assert errors == [] and profiles
    raw = json.loads((ROOT / "profiles" / "cpu" / "tiny-llama-20261122-132006.json").read_text())
    assert raw["schema_version"] == 1  # the file is not rewritten; it migrates in memory
    shipped = next(p for p in profiles if p.path.name == "tiny-llama-20261122-132006.json")
    assert len(shipped.rows) == len(raw["rows"])
    assert {(r["spec"]["gpus"], r["spec"]["strategy"], r["spec"]["offload"]) for r in shipped.rows} == {
        (1, "ddp", "none")
    }
    r = _run(["profiles", str(ROOT / "profiles")])
    assert r.exit_code == 0 and "tiny-llama" in r.stdout


def test_a_bad_file_in_a_profiles_folder_is_skipped_with_a_note(tmp_path):
    import shutil

    shutil.copy(ROOT / "profiles" / "cpu" / "tiny-llama-20261122-132006.json", tmp_path / "good.json")
    shutil.copy(BAD / "deep.json", tmp_path / "deep.json")
    (tmp_path / "nan.json").write_text('{"kind": "lora-budget-profile", "x": NaN}')
    r = _run(["profiles", str(tmp_path)])
    assert "good.json" in r.stdout
    assert "deep.json: nested deeper than 100 levels" in r.stderr
    assert "nan.json: holds NaN, which is not a finite number" in r.stderr


def test_report_draws_the_parity_figure_from_store_files(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    r = _run(["report", "--out", str(out), "--profiles", str(ROOT / "profiles")])
    assert r.exit_code == 0, r.output
    assert (out / "parity.png").stat().st_size > 0
    raw = json.loads((ROOT / "profiles" / "cpu" / "tiny-llama-20261122-132006.json").read_text())
    want = sorted(
        (row["predicted_peak_bytes"], row["peak_allocated_bytes"]) for row in raw["rows"] if row["status"] == "ok"
    )
    with open(out / "parity.csv") as fh:
        got = sorted((int(t["predicted_bytes"]), int(t["measured_bytes"])) for t in csv.DictReader(fh))
    assert got == want and len(got) == 24


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "-m", str(TINY), "--method", "lora", "-s", "16", "--batch-size", str(2**24 + 1)],
        ["trace", "-m", str(TINY), "--method", "lora", "-s", str(2**24 + 1)],
        ["check", "-m", str(TINY), "--method", "lora", "--engine", "profile", "--device", "cpu",
         "--batch-size", "9" * 40, "--baseline", "b.json", "--update-baseline"],
        ["profile", "-m", str(TINY), "--device", "cpu", "-s", "16", "-b", f"1,{2**24 + 1}"],
    ],
)  # fmt: skip
def test_a_step_beyond_any_real_one_is_refused_before_it_runs(tmp_path, monkeypatch, args):
    # a 10^60 micro-batch made a CPU profile allocate for minutes (the fuzzer's one timeout)
    monkeypatch.chdir(tmp_path)
    r = _run(args)
    assert r.exit_code == 2 and "is beyond any real step (at most 16,777,216)" in _error_line(r)
    assert not any(line.startswith(("running", "reading", "[")) for line in r.stderr.splitlines())


def test_plan_takes_any_size():  # it only counts
    r = _run(["plan", "-m", "7b", "-g", "24GB", "--method", "lora", "--batch-size", str(2**24 + 1)])
    assert r.exit_code == 0 and "DOES NOT FIT" in r.stdout
