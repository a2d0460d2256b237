"""The accuracy summary of `lora-budget validate`, on hand-made rows with hand-computed errors."""

import pytest

from lora_budget.breakdown import CATEGORIES
from lora_budget.validation.grid import FIELDS, STATE, grid
from lora_budget.validation.report import accuracy_markdown, meets_targets, state_stats, total_stats


def row(model, method, trace_peak, plan_peak, **state):
    r = dict.fromkeys(FIELDS, "0")
    r.update(model=model, method=method, grad_ckpt="False", batch_size="1", seq_len="1024", attn="sdpa")
    r.update(trace_peak_bytes=str(trace_peak), plan_peak_bytes=str(plan_peak), trace_phase="backward")
    r.update(plan_phase="backward", trace_s="1.0", trace_activations_bytes=str(trace_peak))
    r["plan_activations_bytes"] = str(plan_peak)
    for c in STATE:
        t, p = state.get(c, (1000, 1000))
        r[f"trace_state_{c}_bytes"], r[f"plan_state_{c}_bytes"] = str(t), str(p)
    return r


ROWS = [
    row("GPT-2", "full", 1000, 1010),  # +1 %
    row("GPT-2", "full", 1000, 970),  # -3 %
    row("GPT-2", "lora", 2000, 2000),  # 0 %
    row("Llama-2-7B", "lora", 4000, 4080),  # +2 %
    row("Llama-2-7B", "qlora", 500, 510, gradients=(1000, 1004)),  # +2 %; gradients +0.4 %
]


def test_total_stats_by_method():
    stats = {s.label: s for s in total_stats(ROWS)}
    # full: |+1 %|, |-3 %| -> median 2 %, worst -3 %
    assert stats["full"].n == 2 and stats["full"].median_abs == pytest.approx(0.02)
    assert stats["full"].worst == pytest.approx(-0.03)
    # lora: 0 % and +2 % -> median 1 %
    assert stats["lora"].median_abs == pytest.approx(0.01) and stats["lora"].worst == pytest.approx(0.02)
    # all five: |errors| 1, 3, 0, 2, 2 % -> median 2 %, worst -3 %
    assert stats["all"].n == 5 and stats["all"].median_abs == pytest.approx(0.02)
    assert stats["all"].worst == pytest.approx(-0.03)


def test_targets():
    ok, lines = meets_targets(ROWS)
    assert ok  # median 2 % <= 2 %, worst 3 % <= 5 %, state within 0.5 %
    grads = {s.label: s for s in state_stats(ROWS)}["gradients"]
    assert grads.worst == pytest.approx(0.004)
    bad = ROWS + [row("GPT-2", "qlora", 1000, 1060)]  # +6 % breaks the worst-case target
    assert not meets_targets(bad)[0]
    off = ROWS + [row("GPT-2", "qlora", 1000, 1000, optimizer=(1000, 1010))]  # +1 % optimizer state
    assert not meets_targets(off)[0]


def test_markdown_has_every_row_and_the_summary():
    text = accuracy_markdown(ROWS, {"torch": "x"}, ["a known gap"])
    assert text.count("| GPT-2 |") == 3 + 1  # three configurations and the by-architecture line
    assert "Targets met" in text and "a known gap" in text
    assert "| full | 2 | 2.00% | -3.00% |" in text


def test_grid_size_meets_the_issue():
    configs = grid()
    archs = {c.model for c in configs}
    points = {(c.batch_size, c.seq_len) for c in configs}
    assert len(archs) >= 6 and len(points) >= 3
    assert len(configs) == len(archs) * len(points) * 3 * 2
    assert set(CATEGORIES) >= set(STATE)


def test_validate_cli_resumes_from_the_csv(tmp_path):
    """Rows already in the CSV are not traced again; the report and exit code follow the targets."""
    import csv

    from click.testing import CliRunner

    from lora_budget.cli import main

    configs = grid(quick=True)
    path = tmp_path / "accuracy.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for c in configs:
            r = row(c.model, c.method, 1000, 1010)  # +1 % everywhere: targets met
            r.update(grad_ckpt=str(c.grad_ckpt), batch_size=str(c.batch_size), seq_len=str(c.seq_len))
            writer.writerow(r)
    result = CliRunner().invoke(main, ["validate", "--quick", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "accuracy.md").read_text()
    assert "Targets met" in text and "Published measurements" in text
    assert (tmp_path / "published.csv").exists()
    # one row 6 % off: the worst-case target fails and the command says so with exit 1
    rows = list(csv.DictReader(path.open()))
    rows[0]["plan_peak_bytes"] = "1060"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(main, ["validate", "--quick", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "NOT met" in (tmp_path / "accuracy.md").read_text()


def test_validate_rejects_an_unknown_model():
    from click.testing import CliRunner

    from lora_budget.cli import main

    result = CliRunner().invoke(main, ["validate", "--models", "GPT-3"])
    assert result.exit_code == 2 and "not in the grid" in result.output


def test_replan_rescores_stored_traces_without_tracing(tmp_path):
    import csv

    from lora_budget.core.model import estimate
    from lora_budget.validation.grid import Config, replan, spec_for

    config = Config("GPT-2", "lora", False, 2, 256)
    path = tmp_path / "accuracy.csv"
    stale = row("GPT-2", "lora", 10**9, 1)  # a plan column from some older planner
    stale.update(batch_size="2", seq_len="256")
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerow(stale)
    (fresh,) = replan(path)
    planned = estimate(spec_for(config)).peak_bytes
    assert int(fresh["plan_peak_bytes"]) == planned
    assert fresh["trace_peak_bytes"] == str(10**9)  # the trace is kept
    assert float(fresh["error"]) == pytest.approx(planned / 10**9 - 1, abs=1e-6)
    assert list(csv.DictReader(path.open()))[0]["plan_peak_bytes"] == str(planned)
