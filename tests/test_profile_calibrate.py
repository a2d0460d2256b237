"""Calibration on synthetic GPU profiles whose overhead terms are chosen here.

Construction (MiB = 2**20), three configurations on one GPU:

    planned peak     P = 1024, 2048, 4096 MiB
    allocated        A = P + 64 MiB                (the plan misses 64 MiB of tensors)
    reserved         R = A + 100, 200, 300 MiB     (allocator reserve, mean 200 MiB)
    NVML process     N = R + 500 MiB               (CUDA context)

so the fitted overhead is 64 + 200 + 500 = 764 MiB, and what the constant leaves is the reserve's
spread: N - P - 764 MiB = -100, 0, +100 MiB, an error bar of 100 MiB.
"""

import json

import pytest
from click.testing import CliRunner

from lora_budget import api
from lora_budget.catalog import calibration
from lora_budget.cli import main
from lora_budget.profile.calibrate import fit, write
from lora_budget.profile.store import save
from tests.profile_fixtures import environment, profile, row

MiB = 2**20
PLANNED = [1024 * MiB, 2048 * MiB, 4096 * MiB]
RESERVE = [100 * MiB, 200 * MiB, 300 * MiB]


def _rows(nvml=True):
    out = []
    for b, (p, f) in enumerate(zip(PLANNED, RESERVE, strict=True), start=1):
        a = p + 64 * MiB
        r = a + f
        out.append(row(predicted=p, allocated=a, reserved=r, nvml=r + 500 * MiB if nvml else None, batch_size=b))
    return out


def test_fit_recovers_the_terms():
    result = fit([profile(_rows())])
    (e,) = result.entries
    assert e.gpu_name == "NVIDIA A100-SXM4-80GB" and e.catalog_gpu == "A100 80GB"
    assert (e.torch, e.cuda, e.rows, e.target) == ("2.13", "12.8", 3, "nvml")
    assert e.residual_bytes == 64 * MiB
    assert e.reserve_bytes == 200 * MiB
    assert e.context_bytes == 500 * MiB
    assert e.overhead_bytes == 764 * MiB
    assert e.error_bytes == 100 * MiB
    assert e.median_abs_error_bytes == 100 * MiB  # |-100|, |0|, |+100| -> median 100
    # plan vs allocated: 64 MiB off 1088, 2112 and 4160 MiB
    assert e.plan_vs_allocated_worst_pct == pytest.approx(64 / 1088 * 100, abs=1e-3)
    assert e.plan_vs_allocated_median_pct == pytest.approx(64 / 2112 * 100, abs=1e-3)


def test_without_nvml_the_target_is_reserved():
    (e,) = fit([profile(_rows(nvml=False))]).entries
    assert e.target == "reserved" and e.context_bytes is None
    assert e.overhead_bytes == (64 + 200) * MiB
    assert e.error_bytes == 100 * MiB


def test_groups_by_gpu_and_version_and_skips_cpu_and_oom():
    rows = _rows() + [row(predicted=8192 * MiB, status="oom")]
    newer = profile(_rows(), env=environment(torch="2.14.1+cu129"))
    h100 = profile(_rows(), env=environment(gpu="NVIDIA H100 80GB HBM3"))
    cpu = profile(_rows(), env=environment(device="cpu"))
    result = fit([profile(rows), newer, h100, cpu])
    keys = sorted((e.gpu_name, e.torch) for e in result.entries)
    assert keys == [
        ("NVIDIA A100-SXM4-80GB", "2.13"),
        ("NVIDIA A100-SXM4-80GB", "2.14"),
        ("NVIDIA H100 80GB HBM3", "2.13"),
    ]
    assert all(e.rows == 3 for e in result.entries)  # the OOM row is not fitted
    assert {e.catalog_gpu for e in result.entries} == {"A100 80GB", "H100 SXM"}
    assert len(result.skipped) == 2  # the CPU profile and the OOM row


def test_write_merges_and_plan_uses_it(tmp_path, monkeypatch):
    path = tmp_path / "calibration.json"
    (e,) = fit([profile(_rows())]).entries
    assert write([e], path) == (0, 1)
    assert write([e], path) == (1, 0)  # same GPU and versions: replaced, not duplicated
    entries = tuple(calibration.read(path)["entries"])
    assert len(entries) == 1
    found = calibration.calibrated_overhead("A100 80GB", entries)
    assert found is not None and found.overhead_bytes == 764 * MiB and found.error_bytes == 100 * MiB
    assert calibration.calibrated_overhead("RTX 4090", entries) is None

    plain = api.plan("7b", "a100-80gb", "lora")
    monkeypatch.setattr(api, "calibrated_overhead", lambda name: calibration.calibrated_overhead(name, entries))
    calibrated = api.plan("7b", "a100-80gb", "lora")
    assert calibrated.methods[0].peak_bytes == plain.methods[0].peak_bytes + 764 * MiB
    assert calibrated.methods[0].breakdown.overhead == 764 * MiB
    assert any("error bar: +/- 0.10 GiB" in n for n in calibrated.notes)
    assert calibrated.to_dict()["calibration"]["overhead_bytes"] == 764 * MiB
    # an explicit --overhead wins over calibration
    explicit = api.plan("7b", "a100-80gb", "lora", overhead_bytes=MiB)
    assert explicit.calibration is None and explicit.methods[0].breakdown.overhead == MiB


def test_shipped_calibration_is_empty_and_plan_is_unchanged():
    assert calibration.read()["entries"] == []
    assert calibration.calibrated_overhead("H100 SXM") is None
    result = api.plan("7b", "h100", "lora")
    assert result.calibration is None and "calibration" not in result.to_dict()
    assert result.methods[0].breakdown.overhead == 0
    assert any("no calibration for this GPU yet" in n for n in result.notes)


def test_calibrate_command(tmp_path):
    save(profile(_rows()), tmp_path / "profiles" / "a100" / "p.json")
    (tmp_path / "profiles" / "junk.json").write_text("[]")
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(
        main, ["calibrate", str(tmp_path / "profiles"), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 1  # the junk file is reported, the rest is calibrated
    assert "junk.json: not a lora-budget profile" in result.stderr
    assert "764.00 MiB" in result.stdout and "+/- 100.00 MiB" in result.stdout
    assert json.loads(out.read_text())["entries"][0]["overhead_bytes"] == 764 * MiB
    dry = CliRunner().invoke(
        main, ["calibrate", str(tmp_path / "profiles" / "a100"), "--json", "--dry-run", "--out", str(tmp_path / "n")]
    )
    assert dry.exit_code == 0 and json.loads(dry.stdout)[0]["error_bytes"] == 100 * MiB
    assert not (tmp_path / "n").exists()


def test_calibrate_without_gpu_profiles_says_so(tmp_path):
    save(profile(_rows(), env=environment(device="cpu")), tmp_path / "cpu.json")
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 1 and "no successful GPU rows" in result.stderr
    assert not (tmp_path / "c.json").exists()
