"""SIGTERM (what a CI timeout sends) and SIGHUP end a sweep like Ctrl-C: finished rows saved,
marked interrupted; a second sweep to the same new --out fails before measuring."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
pytest.importorskip("peft", reason="needs peft: pip install -e .[torch]")
pytest.importorskip("bitsandbytes", reason="needs bitsandbytes: pip install -e .[torch]")

from lora_budget.cli import main  # noqa: E402
from lora_budget.profile import sweep  # noqa: E402
from lora_budget.profile.store import load_profile  # noqa: E402
from lora_budget.profile.worker import run_job  # noqa: E402

pytestmark = pytest.mark.torch

TINY = str(Path(__file__).parent / "data" / "tiny-llama" / "config.json")


def _args(out: Path) -> list[str]:
    return ["profile", "-m", TINY, "--device", "cpu", "-s", "16", "-b", "1", "--steps", "1", "--warmup", "1",
            "--rank", "4", "--methods", "full,lora,qlora", "--out", str(out)]  # fmt: skip


def _cpu_env(device):
    return {"device": "cpu", "gpu_name": None, "gpu_memory_bytes": None, "gpu_capability": None,
            "driver_version": None, "cuda_version": None, "cpu": "x86_64", "python": "3", "platform": "Linux",
            "versions": {"torch": "2", "transformers": "5", "peft": "0", "bitsandbytes": "0"}}  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_keep_finished_rows(monkeypatch, tmp_path, sig):
    calls = []

    def runner(job):  # the first configuration runs for real (in-process); the signal lands in the second
        calls.append(job["spec"]["method"])
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return run_job(job)

    monkeypatch.setattr(sweep, "subprocess_runner", runner)
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    result = CliRunner().invoke(main, _args(tmp_path), catch_exceptions=False)
    assert result.exit_code == 130, result.output
    (saved,) = tmp_path.rglob("*.json")
    profile = load_profile(saved)
    assert profile.interrupted and [r["spec"]["method"] for r in profile.rows] == ["full"]
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored after the sweep
    assert calls == ["full", "lora"]  # qlora never started


def test_second_sweep_to_the_same_out_fails_before_measuring(monkeypatch, tmp_path):
    out = tmp_path / "p.json"
    out.write_text("")  # what the first sweep's O_EXCL claim leaves while it runs
    calls = []
    monkeypatch.setattr(sweep, "subprocess_runner", lambda job: calls.append(job) or run_job(job))
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    result = CliRunner().invoke(main, _args(out))
    assert result.exit_code == 2 and "already exists" in result.stderr and calls == []
    assert out.read_text() == ""


def test_a_claimed_out_holds_the_profile_when_done(monkeypatch, tmp_path):
    out = tmp_path / "p.json"
    monkeypatch.setattr(sweep, "subprocess_runner", run_job)
    monkeypatch.setattr(sweep, "environment_of", _cpu_env)
    args = _args(out)
    args[args.index("full,lora,qlora")] = "lora"
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [r["spec"]["method"] for r in load_profile(out).rows] == ["lora"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
