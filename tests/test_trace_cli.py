"""`lora-budget trace` and the small-model plan-vs-trace check that runs on every change."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.breakdown import CATEGORIES
from lora_budget.cli import main

pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
pytest.importorskip("bitsandbytes", reason="needs bitsandbytes: pip install -e .[torch]")

from lora_budget.catalog.models import resolve_model  # noqa: E402
from lora_budget.core.model import peak_model  # noqa: E402
from lora_budget.spec import TrainSpec  # noqa: E402
from lora_budget.trace.engine import trace  # noqa: E402

pytestmark = pytest.mark.torch
TINY = str(Path(__file__).parent / "data" / "tiny-llama" / "config.json")


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_trace_json_matches_a_real_tensor_run(tmp_path):
    timeline = tmp_path / "step.csv"
    r = run("trace", "-m", TINY, "--method", "full,qlora", "-s", "16", "-b", "2", "--json", "--timeline", str(timeline))
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # progress lines go to stderr
    assert data["schema"] == "lora-budget.trace/1"
    rows = list(csv.DictReader(timeline.open()))
    for m in data["methods"]:
        t = m["trace"]
        cats = sum(t[f"{c}_bytes"] for c in CATEGORIES)
        assert cats == t["peak_bytes"]
        # an independent measurement: the same step on real CPU tensors
        spec = TrainSpec(model=resolve_model(TINY), method=m["method"], seq_len=16, batch_size=2)
        assert t["peak_bytes"] == trace(spec, fake=False).peak_bytes
        assert m["plan_error"] == pytest.approx(m["plan"]["peak_bytes"] / t["peak_bytes"] - 1, abs=1e-6)
        mine = [row for row in rows if row["method"] == m["method"]]
        assert max(int(row["live_bytes"]) for row in mine) == t["peak_bytes"]
        assert {"forward", "loss", "backward", "optimizer"} <= {row["phase"] for row in mine}


def test_trace_table():
    r = run("trace", "-m", TINY, "--method", "lora", "-s", "16", "-b", "2")
    assert r.exit_code == 0, r.output
    assert "LoRA trace" in r.output and "plan error" in r.output and "peak during" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", TINY, "-b", "auto"], "trace needs a number"),
        (["-m", "8x7b", "--method", "lora"], "MoE routing"),
        (["-m", TINY, "--steps", "0"], "at least 1"),
    ],
)
def test_trace_bad_input_is_one_line(args, message):
    r = CliRunner().invoke(main, ["trace", *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("ckpt", [False, True], ids=["no-ckpt", "ckpt"])
def test_plan_agrees_with_trace_on_gpt2(method, ckpt):
    """GPT-2 (Conv1D, LayerNorm, GELU, dropout 0.1, tied embeddings) within the accuracy contract."""
    # the reference loop: CPU autocast differs from CUDA's for GPT-2's LayerNorm and tanh-GELU
    spec = TrainSpec(
        model=resolve_model("GPT-2"), method=method, grad_ckpt=ckpt, batch_size=2, seq_len=256, framework="plain"
    )
    traced = trace(spec)
    model = peak_model(spec)
    planned = model.breakdown(spec.batch_size, spec.seq_len)
    assert planned.peak_bytes == pytest.approx(traced.peak_bytes, rel=0.02)
    for category in ("weights", "quant_state", "adapter", "gradients", "optimizer"):
        assert getattr(model.static, category) == pytest.approx(traced.state_bytes[category], rel=0.005, abs=4096)


def test_a_failing_op_names_the_module_and_points_to_plan(monkeypatch):
    """An op that fails inside the model becomes one line naming where, not a traceback."""
    import torch

    def broken(*args, **kwargs):
        raise NotImplementedError("no kernel for this op on this device")

    monkeypatch.setattr(torch.nn.functional, "silu", broken)
    r = CliRunner().invoke(main, ["trace", "-m", TINY, "--method", "lora", "-s", "16", "-b", "2"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "mlp.act_fn" in r.output and "no kernel for this op" in r.output and "plan" in r.output


def test_flash_attention_is_traced_with_the_flash_kernel():
    r = run("trace", "-m", TINY, "--method", "lora", "--attn", "flash", "-s", "16", "-b", "2", "--json")
    assert r.exit_code == 0
    assert "SDPA's flash kernel" in r.stderr
    spec = TrainSpec(model=resolve_model(TINY), method="lora", attn="flash", seq_len=16, batch_size=2)
    assert json.loads(r.stdout)["methods"][0]["trace"]["peak_bytes"] == trace(spec, fake=False).peak_bytes


def test_a_config_transformers_cannot_build(tmp_path):
    cfg = json.loads(Path(TINY).read_text())
    cfg["num_attention_heads"] = 5  # hidden 64 is not divisible by 5 heads
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = CliRunner().invoke(main, ["trace", "-m", str(path), "--method", "full", "-s", "16"])
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_plan_agrees_with_trace_on_llama2_7b(method):
    """The large-model check (`pytest -m slow`): Llama-2-7B with checkpointing, the grid's hardest case."""
    spec = TrainSpec(model=resolve_model("7b"), method=method, grad_ckpt=True, batch_size=1, seq_len=1024)
    traced = trace(spec)
    assert estimate_peak(spec) == pytest.approx(traced.peak_bytes, rel=0.02)


def estimate_peak(spec):
    return peak_model(spec).peak_bytes(spec.batch_size, spec.seq_len)
