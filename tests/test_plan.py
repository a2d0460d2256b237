import dataclasses

import pytest

import lora_budget
from lora_budget.api import plan, plan_spec
from lora_budget.breakdown import CATEGORIES
from lora_budget.catalog.gpus import resolve_gpu
from lora_budget.core.fit import max_batch_size, max_seq_len
from lora_budget.core.model import estimate, peak_model
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec


def test_default_plan_has_three_methods():
    result = lora_budget.plan("7b", "24GB")
    assert [m.method for m in result.methods] == ["full", "lora", "qlora"]
    for m in result.methods:
        assert sum(m.breakdown.as_dict().values()) == m.peak_bytes
        assert all(isinstance(v, int) for v in m.breakdown.as_dict().values())
    full, lora, qlora = result.methods
    assert qlora.peak_bytes < lora.peak_bytes < full.peak_bytes
    assert qlora.fits and not full.fits


def test_json_schema_names():
    d = plan("8b", "a100-80gb").to_dict()
    m = d["methods"][0]
    for key in ["method", "fits", "peak_bytes", "max_batch_size", "max_seq_len", "spec"]:
        assert key in m
    for cat in CATEGORIES:
        assert f"{cat}_bytes" in m
    assert m["spec"]["model"] == "Llama-3.1-8B" and m["spec"]["param_count"] == 8_030_261_248


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "lora8bit"])
@pytest.mark.parametrize("ckpt", [False, True])
def test_fit_search_is_tight(llama7b, method, ckpt):
    spec = TrainSpec(model=llama7b, method=method, grad_ckpt=ckpt, seq_len=1024)
    model = peak_model(spec)
    cap = resolve_gpu("a100-80gb").memory_bytes
    b = max_batch_size(model, 1024, cap)
    if b:
        assert model.fit_bytes(b, 1024) <= cap < model.fit_bytes(b + 1, 1024)
    s = max_seq_len(model, 1, cap, 1 << 20)
    if s:
        assert model.fit_bytes(1, s) <= cap < model.fit_bytes(1, s + 1)


def test_monotone_in_batch_and_seq(llama7b):
    for method in ("full", "lora", "qlora"):
        spec = TrainSpec(model=llama7b, method=method)
        model = peak_model(spec)
        peaks = [model.peak_bytes(b, 512) for b in (1, 2, 4, 8)]
        assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
        peaks = [model.peak_bytes(1, s) for s in (128, 512, 2048, 8192)]
        assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_batch_auto_picks_largest():
    result = plan("Qwen2.5-0.5B", "24GiB", ("qlora",), batch_size="auto", seq_len=1024)
    m = result.methods[0]
    assert m.fits and m.spec.batch_size == m.max_batch_size > 1


def test_suggestions_really_fit(llama7b):
    gpu = resolve_gpu("24GB")
    spec = TrainSpec(model=llama7b, method="lora", seq_len=2048)
    m = plan_spec(spec, gpu)
    assert not m.fits and m.suggestions
    assert m.suggestions[0].change == "--grad-ckpt"
    assert estimate(dataclasses.replace(spec, grad_ckpt=True)).peak_bytes == m.suggestions[0].peak_bytes
    assert all(s.fits and s.peak_bytes <= gpu.memory_bytes for s in m.suggestions)


def test_checkpointing_cuts_activations(llama7b):
    for method in ("full", "lora", "qlora"):
        a = peak_model(TrainSpec(model=llama7b, method=method, seq_len=4096))
        b = peak_model(TrainSpec(model=llama7b, method=method, seq_len=4096, grad_ckpt=True))
        assert b.peak_bytes(2, 4096) < a.peak_bytes(2, 4096)


def test_eager_attention_grows_quadratically(llama7b):
    sdpa = peak_model(TrainSpec(model=llama7b, method="qlora", attn="sdpa"))
    eager = peak_model(TrainSpec(model=llama7b, method="qlora", attn="eager"))
    # eager keeps fp32 softmax + its bf16 cast: 6 bytes x heads x s^2 per layer
    d = (eager.peak_bytes(1, 4096) - sdpa.peak_bytes(1, 4096)) - (eager.peak_bytes(1, 2048) - sdpa.peak_bytes(1, 2048))
    assert d > 3.5 * 32 * 6 * 32 * (4096**2 - 2048**2) / 4


def test_logits_spike_scales_with_vocab():
    # Llama-3.1-8B (V = 128256) at 8k tokens: 12 bytes/vocab/token at the start of backward
    result = plan("8b", "80GiB", ("qlora",), seq_len=8192, grad_ckpt=True)
    m = result.methods[0]
    assert m.breakdown.logits in (0, 12 * 128256 * 8192, 10 * 128256 * 8192)


def test_paged_optimizer_state_can_spill(llama7b):
    spec = TrainSpec(model=llama7b, method="full", optimizer="paged_adamw")
    model = peak_model(spec)
    assert model.static.optimizer_pageable > 0
    assert model.fit_bytes(1, 512) == model.peak_bytes(1, 512) - model.static.optimizer_pageable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch size must be a positive integer"),
        ({"seq_len": -1}, "sequence length must be a positive integer"),
        ({"rank": 0}, "LoRA rank must be a positive integer"),
        ({"rank": 8192}, "LoRA rank 8192 is larger than"),
        ({"targets": "c_attn"}, "target module 'c_attn' does not exist"),
        ({"method": "dora"}, "unknown method"),
        ({"method": "qlora", "dtype": "fp32"}, "16-bit compute dtype"),
        ({"method": "lora", "master_weights": True}, "master weights"),
        ({"quant_blocksize": 48}, "blocksize"),
    ],
)
def test_bad_specs(llama7b, kwargs, match):
    with pytest.raises(LoraBudgetError, match=match):
        TrainSpec(model=llama7b, **{"method": "lora", **kwargs})


def test_long_sequence_warns(llama7b):
    spec = TrainSpec(model=llama7b, method="lora", seq_len=8192)
    assert any("max_position_embeddings" in w for w in spec.warnings)


def test_to_frame():
    pd = pytest.importorskip("pandas")
    frame = plan("7b", "24GB").to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["method"]) == ["full", "lora", "qlora"]
    assert (frame["peak_bytes"] == sum(frame[f"{c}_bytes"] for c in CATEGORIES)).all()
