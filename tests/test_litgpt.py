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
from lora_budget.core.litgpt import dequant_copies, kept_inputs, loss_terms, moments
from lora_budget.core.model import estimate
from lora_budget.core.static import static_memory
from lora_budget.errors import LoraBudgetError
from lora_budget.runtime.litgpt_cases import CASES, case_spec
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


def test_kept_matmul_inputs_by_hand():
    """bitsandbytes 0.42.0's ``MatMul4Bit`` keeps ``ctx.tensors = (A, B)`` (autograd/_functions.py
    522-523), which backward never frees. Llama-3.2-1B (h 2048, q width 2048, i 8192, 16 layers),
    LoRA on q and v, bf16: per block the inputs of attn (h), proj (q width), fc_1/fc_2 (one tensor,
    h) and the MLP proj (i) = 14,336 elements = 28,672 bytes per token; block 0's attn input needs no
    gradient (frozen embedding and norm: ``needs_input_grad`` is false, nothing kept) = 24,576; the
    head keeps the final norm's output, 4,096. 15 x 28,672 + 24,576 + 4,096 = 458,752 bytes per token.
    bitsandbytes 0.43.2 (commit 9e753741) keeps ``(None, B)``: nothing."""
    spec = _spec(method="qlora", targets="query,value", rank=32, bitsandbytes="0.42.0", double_quant=False)
    assert kept_inputs(spec) == 458_752
    assert kept_inputs(_spec(method="qlora", targets="query,value", rank=32, bitsandbytes="0.43.2")) == 0
    assert kept_inputs(_spec(targets="query,value")) == 0


def test_dequant_copies_by_release():
    """Lightning quantizes from fp16, so a bf16 step dequantizes into fp16 and casts: two weight-sized
    tensors in every forward up to bitsandbytes 0.49 (``.to(A.dtype)``) and in every backward
    (``.to(grad_output.dtype)``, still in 0.50, whose forward runs ``gemm_4bit``); an fp16 step's
    cast is a no-op; LoRA dequantizes nothing."""
    assert dequant_copies(_spec(method="qlora", bitsandbytes="0.42.0")) == (2, 2)
    assert dequant_copies(_spec(method="qlora", bitsandbytes="0.49.2")) == (2, 2)
    assert dequant_copies(_spec(method="qlora", bitsandbytes="0.50.2")) == (1, 2)
    assert dequant_copies(_spec(method="qlora", bitsandbytes="0.42.0", dtype="fp16")) == (1, 1)
    assert dequant_copies(_spec()) == (1, 1)


def test_fabric_fp32_logits_moments_by_hand():
    """Llama-3.2-1B LoRA (q, v), one sequence of 512 tokens: V = 128,256, T = 512, VT = 65,667,072.

    Fabric's ``_FabricModule`` casts the bf16 chunks (2 V per token) to fp32 (4 V): at the end of
    the cast the previous step's fp32 logits (4 VT), every bf16 chunk (2 VT) and every fp32 copy
    (4 VT) are alive: 10 VT = 656,670,720 bytes (the last head chunk's moment, 4 VT + final norm
    2 h T + 2 VT, is smaller). Validation: the previous step's 4 VT, the unchunked fp32 logits 4 VT
    and the fp32 log-softmax of the 511 shifted rows, 4 V (T - 1); one sequence's slice is
    contiguous, so no reshape copy: 12 VT - 4 V = 787,491,840.
    """
    spec = _spec(targets="query,value")
    terms = loss_terms(spec)["litgpt"]
    kept, kept_acts, head, _, _, evaluation = moments(terms, 1, 512)
    assert (kept, kept_acts) == (4 * 65_667_072, 0)
    assert head == 656_670_720
    assert evaluation == 787_491_840


def test_stored_trace_shows_the_mechanisms():
    """The stored traces of LitGPT's own code carry the evidence: the full-depth QLoRA case peaks
    at the cast of lm_head's fp16 dequantized weight to bf16 (``_to_copy`` in ``lm_head.linear``),
    the LoRA ones at Fabric's fp32 output cast or in LitGPT's ``validate``."""
    by_case = {row["case"]: row for row in STORED["cases"]}
    assert by_case["qlora-bnb042-qv-16-layers"]["traced_at"].startswith("_to_copy")
    assert "lm_head" in by_case["qlora-bnb042-qv-16-layers"]["traced_at"]
    assert "_FabricModule" in by_case["lora-qv-mha"]["traced_at"]
    assert by_case["lora-qv-dropout-gqa"]["traced_phase"] == "evaluation"
    assert STORED["bitsandbytes_emulated"].startswith("0.42.0")


def test_published_litgpt_rows_walked_by_the_litgpt_plan():
    """Every published LitGPT LoRA / QLoRA row that ``--framework litgpt`` walks (config hub table at
    00af8b0d) is planned within 5 % of its figure: a regression check on the mechanisms above, whose
    bytes are derived from LitGPT, Lightning and bitsandbytes source, never fitted to these rows."""
    import csv

    from lora_budget.validation.published_map import map_row

    data = Path(__file__).parent.parent / "lora_budget" / "validation" / "data" / "published-memory-added.csv"
    checked = 0
    for row in csv.DictReader(data.open()):
        if row["framework_key"] != "litgpt" or "config_hub" not in row["source"] or row["outcome"] != "measured":
            continue
        spec = map_row(row).spec
        if spec is None or spec.framework != "litgpt":
            continue
        from lora_budget.core.model import peak_model

        pm = peak_model(spec)
        planned = pm.peak_bytes(spec.batch_size, spec.seq_len) - pm.static.optimizer_pageable
        assert abs(planned / (float(row["memory_gib"]) * 2**30) - 1) <= 0.05, row["id"]
        checked += 1
    assert checked >= 14


def test_previous_step_false_drops_what_the_last_step_kept():
    """lit-gpt's 2023 loop runs its longest batch once, first: nothing of a previous step is alive.

    Llama-2-7B (h 4096, q width 4096, i 11008, 32 layers, V 32,000), q+v QLoRA on bitsandbytes 0.42:
    kept inputs per token 31 x 2 (3 x 4096 + 11008) + (2 x 4096 + 2 x 11008) + 2 x 4096 =
    1,444,352 + 38,400 + 8,192 = 1,490,944 bytes. At b 1, s 1304 the previous step keeps
    1304 x 1,490,944 bytes of inputs and 1304 x 4 x 32,000 of fp32 logits; without it, neither.
    """
    llama = TrainSpec(
        model=resolve_model("Llama-2-7B"),
        framework="litgpt",
        method="qlora",
        targets="query,value",
        bitsandbytes="0.42.0",
        double_quant=False,
        batch_size=1,
        seq_len=1304,
    )
    assert kept_inputs(llama) == 1_490_944
    from dataclasses import replace

    with_prev = moments(loss_terms(llama)["litgpt"], 1, 1304)
    first = moments(loss_terms(replace(llama, previous_step=False))["litgpt"], 1, 1304)
    assert with_prev[:2] == (1304 * 4 * 32_000, 1304 * 1_490_944)
    assert first[:2] == (0, 0)
    assert with_prev[2] - first[2] == 1304 * 4 * 32_000  # the head moment, less the kept logits
    with pytest.raises(LoraBudgetError, match="needs --framework litgpt"):
        TrainSpec(model=resolve_model("Llama-3.2-1B"), previous_step=False)


PUBLISHED_TRACES = DATA.parent / "litgpt-published-traces.json"


def _published_traces() -> dict[int, dict]:
    return {r["id"]: r for r in json.loads(PUBLISHED_TRACES.read_text())["rows"]}


def test_full_depth_plan_matches_stored_traces_of_published_rows():
    """The plan-vs-trace contract at full depth, on the configurations the published LitGPT rows ran:
    every row ``--framework litgpt`` walks, planned now (accumulation 1, as traced), against the stored
    trace of LitGPT's own step (``runtime/litgpt.py`` ``write_published``)."""
    from lora_budget.core.model import peak_model
    from lora_budget.runtime.litgpt_cases import published_configs

    stored = _published_traces()
    checked = 0
    for row, spec, _, _ in published_configs():
        if spec.framework != "litgpt":
            continue
        model = peak_model(spec)
        planned = model.peak_bytes(spec.batch_size, spec.seq_len) - model.static.optimizer_pageable
        assert abs(planned / stored[int(row["id"])]["traced_peak_bytes"] - 1) <= 0.005, row["id"]
        checked += 1
    assert checked >= 20


def test_stored_traces_reproduce_the_published_litgpt_figures():
    """The evidence behind the mechanisms: LitGPT's own code (Fabric's wrapper, bitsandbytes 0.42.0's
    matmul restated, LitGPT's loop and validate) traced at each published row's configuration lands
    within 2 % of the figure LitGPT printed, the blocks the planner does not walk yet (Falcon, Gemma 2,
    Phi-1.5, Phi-2, StableLM) included. The stored file says so; the planner is never fitted to it."""
    stored = _published_traces()
    assert len(stored) >= 46
    for entry in stored.values():
        assert abs(entry["traced_peak_bytes"] / entry["published_bytes"] - 1) <= 0.02, entry["id"]
