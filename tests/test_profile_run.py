"""Real CPU profiles of the tiny model (full, LoRA, QLoRA), OOM as a result, Ctrl-C keeps rows.

The CPU peak is checked against the trace engine on fake tensors (a separate run that never
touches real data): the measured steady-state steps must allocate exactly what the trace counts.
"""

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
pytest.importorskip("transformers", reason="needs transformers: pip install -e .[torch]")
pytest.importorskip("peft", reason="needs peft: pip install -e .[torch]")
pytest.importorskip("bitsandbytes", reason="needs bitsandbytes: pip install -e .[torch]")

import torch  # noqa: E402

from lora_budget.catalog.models import resolve_model  # noqa: E402
from lora_budget.cli import main  # noqa: E402
from lora_budget.profile import sweep  # noqa: E402
from lora_budget.profile.measure import Settings, measure  # noqa: E402
from lora_budget.profile.specio import model_to_dict, spec_to_dict  # noqa: E402
from lora_budget.profile.store import load_profile  # noqa: E402
from lora_budget.profile.worker import run_job  # noqa: E402
from lora_budget.spec import TrainSpec  # noqa: E402
from lora_budget.trace.engine import trace  # noqa: E402

pytestmark = pytest.mark.torch

TINY = str(Path(__file__).parent / "data" / "tiny-llama" / "config.json")
CPU = Settings(device="cpu", steps=2, warmup=1)


def _spec(method="lora", **kw):
    return TrainSpec(model=resolve_model(TINY), method=method, seq_len=32, batch_size=2, rank=4, **kw)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_cpu_profile_is_a_real_training_run(method):
    spec = _spec(method)
    m = measure(spec, CPU)
    assert m.status == "ok" and m.counter == "tracker"
    # warm-up + measured steps, each with a loss that falls on the fixed batch
    assert len(m.losses) == 3 and all(b < a for a, b in zip(m.losses, m.losses[1:], strict=False))
    assert len(m.step_times_s) == 2 and m.step_s == statistics.median(m.step_times_s)
    assert m.tokens_per_s == pytest.approx(2 * 32 / m.step_s)
    # CPU has no reserved / active / NVML counters
    assert m.peak_reserved_bytes is None and m.nvml_process_bytes is None
    assert m.peak_allocated_bytes == trace(spec, fake=True).peak_bytes


def test_snapshot_is_cuda_only_and_cpu_profiles_without_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sweep, "subprocess_runner", _in_process)
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    result = CliRunner().invoke(
        main,
        [*_profile_args(tmp_path), "--methods", "lora", "--snapshot"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "--snapshot is unavailable on CPU" in result.stderr


def _job(spec, settings=CPU):
    import dataclasses

    return {"model": model_to_dict(spec.model), "spec": spec_to_dict(spec), "settings": dataclasses.asdict(settings)}


def test_oom_is_a_result_row():
    def out_of_memory(spec, settings, tokens):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1.00 GiB free.")

    answer = run_job(_job(_spec()), measure_fn=out_of_memory)
    m = answer["measurement"]
    assert m["status"] == "oom" and m["error"].startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert answer["environment"]["device"] == "cpu"

    def broken(spec, settings, tokens):
        raise ValueError("something else")

    m = run_job(_job(_spec()), measure_fn=broken)["measurement"]
    assert m["status"] == "error" and m["error"] == "ValueError: something else"


def _in_process(job):
    return run_job(job)


def _cpu_env(device):
    from lora_budget.profile.environment import environment

    return environment(device)


def _profile_args(tmp_path):
    return ["profile", "-m", TINY, "--device", "cpu", "-s", "16", "-b", "1", "--steps", "1", "--warmup", "1",
            "--rank", "4", "--out", str(tmp_path)]  # fmt: skip


def test_sweep_keeps_going_after_oom_and_ctrl_c_keeps_rows(monkeypatch, tmp_path):
    calls = []

    def runner(job):
        calls.append(job["spec"]["method"])
        if len(calls) == 2:
            return run_job(
                job, measure_fn=lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory"))
            )
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_job(job)

    monkeypatch.setattr(sweep, "subprocess_runner", runner)
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    result = CliRunner().invoke(
        main, [*_profile_args(tmp_path), "--methods", "full,lora,qlora"], catch_exceptions=False
    )
    assert result.exit_code == 130  # interrupted, but saved
    (saved,) = tmp_path.rglob("*.json")
    profile = load_profile(saved)
    assert profile.interrupted and profile.planned == 3
    assert [(r["spec"]["method"], r["status"]) for r in profile.rows] == [("full", "ok"), ("lora", "oom")]
    assert "OOM: does not fit" in result.stdout
    assert "interrupted after 2 of 3 configurations" in result.stdout
    assert "[2/3] lora b=1 s=16 ckpt=off: does not fit (out of memory)" in result.stderr


def test_bad_input_is_one_line(tmp_path):
    for args, message in [
        (["profile", "-m", TINY, "--methods", "lora,dora"], "unknown ['dora']"),
        (["profile", "-m", TINY, "--seq-len", "0"], "give positive integers"),
        (["profile"], "give --model"),
        (["profile", "-m", TINY, "--device", "cpu", "--data", str(tmp_path / "none.txt")], "cannot read it"),
    ]:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
@pytest.mark.slow
def test_cuda_requested_without_cuda(tmp_path):
    result = CliRunner().invoke(main, [*_profile_args(tmp_path)[:-2], "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "PyTorch sees no CUDA device" in result.stderr


@pytest.mark.slow
def test_cli_profiles_all_three_methods_in_subprocesses(tmp_path):
    """End to end: one fresh worker process per configuration, the store file, the table."""
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    args = [*_profile_args(tmp_path), "--methods", "full,lora,qlora", "--data", str(data), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (saved,) = tmp_path.rglob("*.json")
    assert saved.parent.name == "cpu"
    profile = load_profile(saved)
    assert [r["status"] for r in profile.rows] == ["ok", "ok", "ok"]
    assert [r["spec"]["method"] for r in profile.rows] == ["full", "lora", "qlora"]
    assert all(r["losses"][1] < r["losses"][0] for r in profile.rows)
    assert profile.settings["data"].endswith("as byte-level ids")
    assert profile.environment["versions"]["torch"] == torch.__version__
    assert json.loads(result.stdout)["rows"][0]["spec"]["method"] == "full"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counters(tmp_path):
    spec = _spec("lora")
    m = measure(spec, Settings(device="cuda", steps=2, warmup=1, snapshot=str(tmp_path / "snap.pickle")))
    assert m.counter == "cuda" and m.status == "ok"
    assert m.peak_reserved_bytes >= m.peak_active_bytes >= m.peak_allocated_bytes > 0
    assert m.ooms == 0 and all(b < a for a, b in zip(m.losses, m.losses[1:], strict=False))
    assert (tmp_path / "snap.pickle").stat().st_size > 0


def test_local_weights_replace_random_ones(tmp_path):
    from safetensors.torch import save_file

    from lora_budget.runtime.build import build

    spec = _spec("full")
    source = build(spec, seed=1).model
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = build(spec, seed=0, weights=str(tmp_path)).model
    fresh = build(spec, seed=0).model
    for (name, a), b in zip(loaded.named_parameters(), source.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, c) for a, c in zip(loaded.parameters(), fresh.parameters(), strict=True))
    m = measure(spec, Settings(device="cpu", steps=1, warmup=1, weights=str(tmp_path)))
    assert m.status == "ok" and m.losses[1] < m.losses[0]


def test_weights_folder_without_safetensors(tmp_path):
    from lora_budget.errors import LoraBudgetError
    from lora_budget.runtime.build import build

    with pytest.raises(LoraBudgetError, match="no \\*.safetensors files there"):
        build(_spec("full"), weights=str(tmp_path))


@pytest.mark.slow
def test_real_ctrl_c_saves_finished_rows(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C in a terminal sends) while the second
    configuration runs: the first row is saved, the command exits 130 promptly."""
    import os
    import selectors
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).parents[1]
    args = _profile_args(tmp_path)[1:]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_budget", "profile", *args, "--methods", "full,lora,qlora"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
    )
    err, deadline = "", time.monotonic() + 240
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    while "[2/3] lora" not in err and time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=1):
            err += proc.stderr.readline()
    assert "[2/3] lora" in err, err
    time.sleep(0.2)  # the second configuration has started
    os.killpg(proc.pid, signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, err + rest
    (saved,) = tmp_path.rglob("*.json")
    profile = load_profile(saved)
    # the rows that finished are kept, in order, and the third configuration never ran; whether
    # the second one finishes before the signal lands depends on the machine's speed
    methods = [r["spec"]["method"] for r in profile.rows]
    assert profile.interrupted and methods in (["full"], ["full", "lora"])
    assert all(r["status"] == "ok" for r in profile.rows)
    assert f"interrupted after {len(methods)} of 3 configurations" in out


def test_config_file_sets_the_profile_and_flags_win(monkeypatch, tmp_path):
    """An axolotl file fills the grid; a typed flag (-b 2) wins over micro_batch_size; keys a
    profile cannot use (epochs, FlashAttention) are named, not silently dropped."""
    monkeypatch.setattr(sweep, "subprocess_runner", _in_process)
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    config = tmp_path / "axolotl.yml"
    config.write_text(
        f"base_model: {TINY}\nadapter: qlora\nload_in_4bit: true\nlora_r: 4\nlora_alpha: 8\n"
        "sequence_len: 16\nmicro_batch_size: 4\ngradient_checkpointing: true\nnum_epochs: 2\n"
        "flash_attention: true\nlearning_rate: 0.0002\n"
    )
    out = tmp_path / "p.json"
    args = ["profile", "--config", str(config), "--device", "cpu", "-b", "2", "--steps", "1", "--warmup", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = load_profile(out).rows
    spec = row["spec"]
    assert (spec["method"], spec["seq_len"], spec["batch_size"], spec["grad_ckpt"]) == ("qlora", 16, 2, True)
    assert (spec["rank"], spec["alpha"], spec["attn"]) == (4, 8, "sdpa")
    assert "the command line overrode --batch-size" in result.stderr
    assert "not used by profile: flash_attention" in result.stderr and "num_epochs" in result.stderr
