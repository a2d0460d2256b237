"""``lora-budget check``: exit 0 within tolerance, 1 on a regression (naming the category), 2 on bad input."""

import json

import pytest
from click.testing import CliRunner

from lora_budget.api import plan
from lora_budget.cli import main

GiB = 2**30
SPEC = ["-m", "7b", "--method", "lora,qlora", "--seq-len", "2048"]


def run(*args):
    return CliRunner().invoke(main, ["check", *args], catch_exceptions=False)


@pytest.fixture
def baseline(tmp_path):
    path = tmp_path / "memory.json"
    r = run("--baseline", str(path), *SPEC, "--update-baseline")
    assert r.exit_code == 0, r.output
    return path


def test_update_writes_plan_numbers_and_check_passes(baseline):
    data = json.loads(baseline.read_text())
    assert data["schema"] == 1 and data["engine"] == "plan" and data["tool"] == "lora-budget"
    planned = {m.method: m for m in plan("7b", "24GB", ("lora", "qlora"), seq_len=2048).methods}
    for entry in data["entries"]:
        m = planned[entry["method"]]
        assert entry["peak_bytes"] == m.peak_bytes
        assert entry["categories"] == m.breakdown.as_dict()
        assert entry["spec"]["seq_len"] == 2048 and entry["spec"]["model"] == "Llama-2-7B"
    assert [p.name for p in baseline.parent.iterdir()] == ["memory.json"]  # no temp file left behind
    r = run("--baseline", str(baseline), *SPEC)
    assert r.exit_code == 0
    assert r.output.count(" ok") == 2


def _shrink(path, method, category, nbytes):
    """Hand-edit the baseline as a past, smaller run would have written it."""
    data = json.loads(path.read_text())
    entry = next(e for e in data["entries"] if e["method"] == method)
    entry["categories"][category] -= nbytes
    entry["peak_bytes"] -= nbytes
    path.write_text(json.dumps(data, indent=2))
    return entry["peak_bytes"]


def test_regression_names_the_category_and_the_fix(baseline):
    grown = 2 * GiB
    old_peak = _shrink(baseline, "lora", "activations", grown)
    r = run("--baseline", str(baseline), *SPEC)
    assert r.exit_code == 1
    assert "REGRESSION" in r.stdout
    cause, fix = r.stderr.strip().splitlines()
    pct = 100 * grown / old_peak
    assert cause.startswith(f"cause: lora peak grew +2.00 GiB (+{pct:.2f} %)")
    assert "activations +2.00 GiB" in cause
    assert fix.startswith("fix:") and "--update-baseline" in fix


def test_growth_within_tolerance_passes(baseline):
    peak = json.loads(baseline.read_text())["entries"][1]["peak_bytes"]  # qlora
    _shrink(baseline, "qlora", "activations", peak // 200)  # the current run is ~0.5 % larger
    assert run("--baseline", str(baseline), *SPEC, "--tolerance", "1").exit_code == 0
    assert run("--baseline", str(baseline), *SPEC, "--tolerance", "0.25").exit_code == 1


def test_spec_change_is_reported_as_the_cause(baseline):
    r = run("--baseline", str(baseline), "-m", "7b", "--method", "lora", "--seq-len", "4096")
    assert r.exit_code == 1
    assert "spec changed: seq_len 2048 -> 4096" in r.stderr


def test_json_output(baseline):
    r = run("--baseline", str(baseline), *SPEC, "--json")
    data = json.loads(r.stdout)
    assert data["status"] == "pass" and [c["delta_bytes"] for c in data["checks"]] == [0, 0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; create it with --update-baseline"),
        ('{"schema": 1,', "is not valid JSON"),
        ('{"schema": 7}', "schema 7"),
        ('{"schema": 1, "engine": "plan", "entries": []}', "no `entries`"),
    ],
    ids=["missing", "corrupt", "schema", "empty"],
)
def test_bad_baseline_exits_2(tmp_path, content, message):
    path = tmp_path / "memory.json"
    if content is not None:
        path.write_text(content)
    r = run("--baseline", str(path), *SPEC)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_categories_that_do_not_sum_exit_2(baseline):
    data = json.loads(baseline.read_text())
    data["entries"][0]["peak_bytes"] += 1
    baseline.write_text(json.dumps(data))
    r = run("--baseline", str(baseline), *SPEC)
    assert r.exit_code == 2 and "not the sum of its categories" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seq-len", "0"], "sequence length must be a positive integer"),
        (["--engine", "profile"], "measured by the plan engine"),
        (["--engine", "trace", "--method", "lora"], "measured by the plan engine"),
        (["--method", "full"], "has no entry for full"),
        (["--batch-size", "auto"], "fixed --batch-size"),
        (["--model", "no-such-model"], "unknown model"),
    ],
    ids=["seq0", "profile", "engine-mismatch", "method-missing", "auto", "model"],
)
def test_bad_input_exits_2(baseline, args, message, monkeypatch):
    if "trace" in args:
        pytest.importorskip("torch")
        import lora_budget.gate as gate

        # the mismatch is found before any comparison; skip the 7B trace itself
        monkeypatch.setattr(gate, "measure", lambda specs, engine: gate.Baseline(engine=engine, entries=()))
    spec = ["-m", "7b", "--method", "lora,qlora"]
    r = run("--baseline", str(baseline), *spec, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output


@pytest.mark.torch
def test_trace_engine_on_a_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from lora_budget.spec import TrainSpec
    from lora_budget.trace.engine import trace
    from tests.tiny_models import TINY, tiny_ref

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    path = tmp_path / "trace.json"
    args = ["--baseline", str(path), "-m", str(config), "--method", "lora", "--seq-len", "16", "-b", "2", "-r", "4"]
    assert run(*args, "--engine", "trace", "--update-baseline").exit_code == 0
    entry = json.loads(path.read_text())["entries"][0]
    expected = trace(TrainSpec(model=tiny_ref("llama"), method="lora", seq_len=16, batch_size=2, rank=4))
    assert entry["peak_bytes"] == expected.peak_bytes
    assert run(*args, "--engine", "trace").exit_code == 0


def _tiny_args(tmp_path, *extra):
    from tests.tiny_models import TINY

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY["llama"]))
    spec = ["-m", str(config), "--method", "lora", "--seq-len", "16", "-b", "2", "-r", "4", *extra]
    return ["--baseline", str(tmp_path / "profile.json"), *spec, "--engine", "profile", "--device", "cpu"]


@pytest.mark.torch
def test_profile_engine_on_cpu_counts_real_steps(tmp_path):
    """Real steps on CPU: the tracker's count of real tensors, which equals the fake trace byte for
    byte (tests/test_trace_fake_vs_real.py), so the trace's breakdown is the golden value here."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from lora_budget.spec import TrainSpec
    from lora_budget.trace.engine import trace
    from tests.tiny_models import tiny_ref

    r = run(*_tiny_args(tmp_path), "--update-baseline")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["engine"] == "profile" and data["device"] == "cpu"
    entry = data["entries"][0]
    expected = trace(TrainSpec(model=tiny_ref("llama"), method="lora", seq_len=16, batch_size=2, rank=4)).breakdown
    assert entry["categories"] == expected.as_dict()
    assert entry["peak_bytes"] == expected.peak_bytes
    assert "oom" not in entry
    assert run(*_tiny_args(tmp_path)).exit_code == 0
    # twice the tokens: more activations and logits, the same weights
    r = run(*_tiny_args(tmp_path, "--seq-len", "32"))
    assert r.exit_code == 1, r.output
    cause = next(line for line in r.stderr.splitlines() if line.startswith("cause:"))
    assert cause.startswith("cause: lora peak grew") and "spec changed: seq_len 16 -> 32" in cause
    assert "logits" in cause and "weights" not in cause


def _cuda_runner(peak_bytes, status="ok"):
    """What a CUDA worker answers: allocator counters, no split by category."""
    from lora_budget.profile.measure import Measurement

    def runner(job):
        m = Measurement(status=status, counter="cuda", peak_allocated_bytes=peak_bytes, peak_reserved_bytes=peak_bytes)
        env = {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_memory_bytes": 80 * 10**9}
        return {"environment": env, "measurement": m.to_dict()}

    return runner


def test_profile_engine_on_cuda_compares_totals_and_fails_on_oom(tmp_path, monkeypatch):
    """A CUDA profile has a total and no split; out of memory is a regression and never a baseline."""
    import lora_budget.gate as gate
    from lora_budget.catalog.models import resolve_model
    from lora_budget.spec import TrainSpec

    specs = [TrainSpec(model=resolve_model("7b"), method="lora")]
    path = tmp_path / "gpu.json"
    base = gate.measure(specs, "profile", device="cuda", runner=_cuda_runner(20 * GiB))
    assert base.device == "NVIDIA H100 80GB HBM3" and base.entries[0].categories == {}
    gate.write_baseline(path, base)
    loaded = gate.load_baseline(path)
    assert loaded.entries[0].peak_bytes == 20 * GiB and loaded.device == base.device

    grown = gate.measure(specs, "profile", device="cuda", runner=_cuda_runner(21 * GiB))
    (c,) = gate.compare(loaded, grown, 1.0, path)
    assert c.regressed and not c.split and c.delta_bytes == GiB

    oom = gate.measure(specs, "profile", device="cuda", runner=_cuda_runner(19 * GiB, status="oom"))
    (c,) = gate.compare(loaded, oom, 1.0, path)
    assert c.regressed and c.status == "OUT OF MEMORY"  # smaller than the baseline, yet it did not fit
    with pytest.raises(gate.LoraBudgetError, match="ran out of memory"):
        gate.write_baseline(tmp_path / "oom.json", oom)
    assert not (tmp_path / "oom.json").exists()

    cpu = gate.Baseline(engine="profile", entries=loaded.entries, device="cpu")
    with pytest.raises(gate.LoraBudgetError, match="CPU and CUDA counters differ"):
        gate.compare(loaded, cpu, 1.0, path)

    monkeypatch.setattr(gate, "measure", lambda specs, engine, device: oom)
    r = run("--baseline", str(path), "-m", "7b", "--method", "lora", "--engine", "profile")
    assert r.exit_code == 1 and "OUT OF MEMORY" in r.stdout
    assert "\ncause: lora ran out of memory on NVIDIA H100 80GB HBM3 (19.00 GiB allocated" in r.stderr
    monkeypatch.setattr(gate, "measure", lambda specs, engine, device: grown)
    r = run("--baseline", str(path), "-m", "7b", "--method", "lora", "--engine", "profile")
    assert r.exit_code == 1 and "not split by category" in r.stderr


@pytest.mark.torch
def test_profile_engine_on_cuda_without_a_gpu_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    args = _tiny_args(tmp_path)
    args[args.index("cpu")] = "cuda"
    r = run(*args, "--update-baseline")
    assert r.exit_code == 2 and "PyTorch sees no CUDA device here" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "profile.json").exists()
