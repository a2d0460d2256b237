"""The profile store: round trip, no overwrite, atomic writes, and corrupt files reported by name."""

import json

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.profile import store
from lora_budget.profile.store import ProfileError, load_profile, load_profiles, save
from tests.profile_fixtures import environment, profile, row

MiB = 2**20


def _sample():
    return profile([row(predicted=100 * MiB, allocated=101 * MiB, reserved=120 * MiB, nvml=620 * MiB)])


def test_round_trip(tmp_path):
    original = _sample()
    path = save(original, tmp_path / "a.json")
    loaded = load_profile(path)
    assert loaded == original  # path is not compared
    assert loaded.path == path
    data = json.loads(path.read_text())
    assert data["schema_version"] == store.SCHEMA_VERSION and data["kind"] == store.KIND
    # the full spec is stored: every TrainSpec field but the model and its warnings
    assert data["rows"][0]["spec"]["method"] == "lora" and "grad_ckpt" in data["rows"][0]["spec"]
    assert data["model"]["config"]["hidden_size"] == 64
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"


def test_never_overwrites(tmp_path):
    path = save(_sample(), tmp_path / "a.json")
    before = path.read_bytes()
    other = profile([row(predicted=1, allocated=2, reserved=3)], created="2026-11-23T00:00:00Z")
    with pytest.raises(ProfileError, match="already exists; not overwritten"):
        save(other, path)
    assert path.read_bytes() == before
    second = save(other, path, unique=True)
    assert second.name == "a-2.json" and path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_default_path_names_device_and_model(tmp_path):
    p = profile([], env=environment(gpu="NVIDIA H100 80GB HBM3"))
    assert store.default_path(tmp_path, p) == tmp_path / "nvidia-h100-80gb-hbm3" / "tiny-llama-20261122-120000.json"
    cpu = profile([], env=environment(device="cpu"))
    assert store.default_path(tmp_path, cpu).parent.name == "cpu"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rows": [', "not valid JSON"),
        ('{"hello": "world"}', "not a lora-budget profile"),
        ("[1, 2, 3]", "not a lora-budget profile"),
        ('{"kind": "lora-budget-profile", "schema_version": 99}', "schema version 99 is newer"),
        ('{"kind": "lora-budget-profile", "schema_version": 0}', "unsupported schema version 0"),
    ],
    ids=["truncated", "foreign-object", "foreign-list", "newer-schema", "older-schema"],
)
def test_bad_files_are_named_and_others_still_load(tmp_path, content, message):
    good = save(_sample(), tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    profiles, errors = load_profiles([tmp_path])
    assert [p.path for p in profiles] == [good]
    assert len(errors) == 1 and errors[0].path == bad
    assert message in errors[0].message
    assert str(bad) in str(errors[0])


def test_schema_violations_are_precise(tmp_path):
    data = _sample().to_dict()
    del data["rows"][0]["peak_allocated_bytes"]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"x.json: rows\[0\] is missing 'peak_allocated_bytes'"):
        load_profile(path)
    data = _sample().to_dict()
    data["rows"][0]["status"] = "maybe"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"status must be one of ok, oom, error"):
        load_profile(path)
    data = _sample().to_dict()
    data["environment"]["gpu_memory_bytes"] = "80GB"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"environment.gpu_memory_bytes must be int or null, got str"):
        load_profile(path)


def test_oom_rows_validate(tmp_path):
    p = profile([row(predicted=10, status="oom"), row(predicted=5, allocated=6, reserved=8)])
    loaded = load_profile(save(p, tmp_path / "o.json"))
    assert [r["status"] for r in loaded.rows] == ["oom", "ok"]


def test_profiles_command_lists_good_and_names_bad(tmp_path):
    save(_sample(), tmp_path / "gpu" / "good.json")
    (tmp_path / "broken.json").write_text("{not json")
    result = CliRunner().invoke(main, ["profiles", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "good.json" in result.stdout and "NVIDIA A100-SXM4-80GB" in result.stdout and "1/0/0" in result.stdout
    assert f"error: {tmp_path / 'broken.json'}: not valid JSON" in result.stderr
    rows = CliRunner().invoke(main, ["profiles", str(tmp_path / "gpu"), "--rows"], catch_exceptions=False)
    assert rows.exit_code == 0 and "lora" in rows.stdout and "101.00 MiB" in rows.stdout
    as_json = CliRunner().invoke(main, ["profiles", str(tmp_path / "gpu"), "--json"], catch_exceptions=False)
    assert json.loads(as_json.stdout)["profiles"][0]["rows"][0]["peak_allocated_bytes"] == 101 * MiB


def test_profiles_missing_path_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["profiles", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr and "Traceback" not in result.output


def test_saved_file_is_readable_by_others(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = save(_sample(), tmp_path / "p.json")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0666 less the umask 022, not mkstemp's 0600
