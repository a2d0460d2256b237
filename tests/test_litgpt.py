"""framework="litgpt": LitGPT's model layout, LoRA flags and loop, planned against a trace of LitGPT's own code.

litgpt is not installed with lora-budget (its pins would change huggingface_hub), so the trace of its
``finetune/lora.py`` step (``lora_budget/runtime/litgpt.py``, litgpt 0.4.13 on fake tensors) is
stored in ``lora_budget/validation/data/litgpt-trace.json`` with the versions and commit it ran from;
the fast test here plans every stored case again and checks the plan against the stored trace. The
slow test re-traces when ``litgpt`` is importable and is skipped otherwise (it is skipped in CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.catalog.models import resolve_model
from lora_budget.cli import main
from lora_budget.core.model import estimate
from lora_budget.core.static import static_memory
from lora_budget.errors import LoraBudgetError
from lora_budget.runtime.litgpt import CASES, case_spec
from lora_budget.spec import TrainSpec

DATA = Path(__file__).parent.parent / "lora_budget" / "validation" / "data" / "litgpt-trace.json"
STORED = json.loads(DATA.read_text())


def test_stored_trace_names_its_versions():
    assert STORED["litgpt"] == "0.4.13"
    assert STORED["litgpt_commit_of_the_published_table"].startswith("00af8b0d")
    assert STORED["torch"] and STORED["lora_budget_commit"]
    assert {row["case"] for row in STORED["cases"]} == set(CASES)


@pytest.mark.parametrize("row", STORED["cases"], ids=lambda row: row["case"])
def test_plan_matches_stored_litgpt_trace(row):
    spec = case_spec(row["case"])
    planned = estimate(spec)
    assert abs(planned.peak_bytes / row["traced_peak_bytes"] - 1) <= 0.005
    # the static categories are exact up to the RoPE cache buffers (2 s x head_dim fp32, in weights)
    rope = 2 * spec.seq_len * spec.model.shape.head_dim * 4
    for key in ("quant_state", "adapter", "optimizer"):
        assert planned.as_dict()[key] == row["traced"][key], key
    assert row["traced"]["weights"] - planned.weights == rope


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_fresh_litgpt_trace(case):
    pytest.importorskip("litgpt", reason="litgpt 0.4.13 not importable: the stored trace is checked instead")
    from lora_budget.runtime.litgpt import trace_litgpt

    spec = case_spec(case)
    assert abs(estimate(spec).peak_bytes / trace_litgpt(spec).peak_bytes - 1) <= 0.005


def _spec(**kw) -> TrainSpec:
    return TrainSpec(model=resolve_model("Llama-3.2-1B"), framework="litgpt", **kw)


def test_litgpt_defaults_and_refusals():
    spec = _spec(targets="query,value")
    assert (spec.adapter_dtype, spec.loss_kernel, spec.autocast_on, spec.kbit_prepared) == (
        "bf16",
        "litgpt-ce",
        False,
        False,
    )
    assert TrainSpec(model=resolve_model("Llama-3.2-1B")).adapter_dtype == "fp32"  # peft's default elsewhere
    with pytest.raises(LoraBudgetError, match="its own chunked loss"):
        _spec(loss="full-ce")
    with pytest.raises(LoraBudgetError, match="needs --framework litgpt"):
        TrainSpec(model=resolve_model("Llama-3.2-1B"), loss="litgpt-ce")
    with pytest.raises(LoraBudgetError, match="another LitGPT block"):
        TrainSpec(model=resolve_model("Falcon-7B"), framework="litgpt")
    with pytest.raises(LoraBudgetError, match="finetune full"):
        _spec(method="full")
    with pytest.raises(LoraBudgetError, match="not one of its flags"):
        _spec(targets="query,c_attn")


def test_litgpt_layout_and_adapters():
    """Llama-3.2-1B (h 2048, 32 heads, 8 kv heads of 64, i 8192, V 128256, 16 layers), r 8, q+v.

    LoRAQKVLinear: A is (2 r, h) = 32,768 elements, B is (q + kv width, r) = (2048 + 512) x 8 =
    20,480 elements, both bf16: 65,536 + 40,960 bytes per layer, 1,703,936 for 16 layers.
    LitGPT's GPT never ties lm_head to wte: the bf16 weights hold V h twice, 2 x 525,336,576 bytes,
    where transformers' tied model holds it once.
    """
    lit = static_memory(_spec(targets="query,value", rank=8))
    assert lit.adapter == 16 * (65_536 + 40_960)
    tied = static_memory(TrainSpec(model=resolve_model("Llama-3.2-1B"), targets="q_proj,v_proj", rank=8))
    assert lit.weights - tied.weights == 128_256 * 2048 * 2
    # lora_mlp adapts fc_1, fc_2 and proj at once; lora_head adds A (r, h) and B (V, r)
    mlp_head = static_memory(_spec(targets="mlp,head", rank=8)).adapter
    per_layer = 2 * (8 * 2048 * 2 + 8192 * 8 * 2) + (8 * 8192 * 2 + 2048 * 8 * 2)
    assert mlp_head == 16 * per_layer + 8 * 2048 * 2 + 128_256 * 8 * 2
    # QLoRA: Fabric's BitsandbytesPrecision makes lm_head 4-bit too (V h / 2 bytes)
    q = static_memory(_spec(method="qlora", targets="query,value", double_quant=False))
    q_hf = static_memory(TrainSpec(model=resolve_model("Llama-3.2-1B"), method="qlora", double_quant=False))
    assert q.weights - q_hf.weights == 128_256 * 2048 // 2


def test_cli_plans_litgpt():
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "-m",
            "Llama-3.2-1B",
            "-g",
            "24GB",
            "--framework",
            "litgpt",
            "--method",
            "qlora",
            "--targets",
            "query,value",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "framework litgpt (LitGPT finetune lora, bf16-true), loss litgpt-ce" in result.output
