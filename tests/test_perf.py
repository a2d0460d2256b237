"""FLOPs, time and cost against values derived by hand in this file.

The tiny Llama of tests/tiny_models.py: h = 64, L = 2 layers, a = 4 heads of d = 16, 2 KV heads
(kv width 32), MLP i = 160 (gated), V = 256, untied lm_head.

GEMM weights per layer: q 64x64 = 4096, k 64x32 = 2048, v 2048, o 4096, gate/up/down 64x160 =
10240 each -> 43,008; two layers 86,016; lm_head 256 x 64 = 16,384; N = 102,400.
LoRA r = 4 on all linears, r * (in + out) per module: q 512, k 384, v 384, o 512, gate/up/down
896 each -> 4,480 per layer, N_adapter = 8,960.
Micro-batch b = 2, s = 8: T = 16 tokens.
Attention forward, unmasked: 4 * b * s^2 * a * d * L = 4 * 2 * 64 * 4 * 16 * 2 = 65,536.
"""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from lora_budget.catalog.gpus import GPU, resolve_gpu
from lora_budget.catalog.models import resolve_model
from lora_budget.cli import main
from lora_budget.perf.flops import step_flops
from lora_budget.perf.time import estimate_time
from lora_budget.perf.utilization import mfu_for
from lora_budget.spec import TrainSpec
from tests.tiny_models import tiny_ref

N = 86_016 + 16_384
N_DECODER = 86_016
N_ADAPTER = 8_960
T = 16
ATTN_FWD = 65_536


def tiny(**kw):
    base = dict(model=tiny_ref("llama"), batch_size=2, seq_len=8, rank=4)
    base.update(kw)
    return TrainSpec(**base)


def test_full_eager():
    f = step_flops(tiny(method="full", attn="eager"))
    assert f.tokens == 16
    assert f.dense_flops == 6 * N * T == 9_830_400
    assert f.adapter_flops == 0
    assert f.attention_flops == 3 * ATTN_FWD == 196_608  # forward + 2x backward
    assert f.recompute_flops == 0
    assert f.total_flops == f.model_flops == 10_027_008


def test_full_sdpa_is_causal_and_recomputes_in_kernel():
    f = step_flops(tiny(method="full", attn="sdpa"))
    half = ATTN_FWD // 2  # 32,768: causal kernels skip the masked half
    assert f.attention_flops == half + half * 5 // 2 == 114_688  # backward 2.5x (FlashAttention-2 count)
    assert f.flash_recompute_flops == half // 2 == 16_384
    assert f.total_flops == 9_830_400 + 114_688
    assert f.model_flops == 9_945_088 - 16_384


def test_lora_with_checkpointing():
    f = step_flops(tiny(method="lora", attn="sdpa", grad_ckpt=True))
    assert f.dense_flops == 4 * N * T == 6_553_600  # frozen: forward + input gradient
    assert f.adapter_flops == 6 * N_ADAPTER * T == 860_160
    # one more forward of the decoder layers: base + adapters + attention (lm_head not recomputed)
    assert f.recompute_flops == 2 * N_DECODER * T + 2 * N_ADAPTER * T + 32_768 == 3_072_000
    assert f.total_flops == 6_553_600 + 860_160 + 114_688 + 3_072_000
    assert f.model_flops == 10_600_448 - 3_072_000 - 16_384
    assert f.dequant_bytes == 0


def test_qlora_dequantization_bytes():
    # NF4, blocksize 64, double quant: 4 + 8/64 + 32/(64*256) bits read, 2 bytes (bf16) written, per weight
    per_weight = (4 + 8 / 64 + 32 / (64 * 256)) / 8 + 2  # 2.515869140625
    f = step_flops(tiny(method="qlora"))
    assert f.dequant_bytes == round(N_DECODER * per_weight * 2) == 432_810  # forward + backward
    g = step_flops(tiny(method="qlora", grad_ckpt=True))
    assert g.dequant_bytes == round(N_DECODER * per_weight * 3)  # + recompute
    assert f.total_flops == step_flops(tiny(method="lora")).total_flops  # same GEMMs as LoRA


def test_7b_full_is_about_six_n_per_token():
    """Llama-2-7B at s = 2048: 6N per token (N = 6,738,415,616 minus the 131,072,000-weight embedding
    lookup, plus nothing for norms) + attention 3 * 4 * s * a * d * L / 2 per token with causal kernels."""
    from lora_budget.catalog.models import resolve_model

    f = step_flops(TrainSpec(model=resolve_model("7b"), method="full", seq_len=2048))
    gemm_n = 6_738_415_616 - 32_000 * 4096 - (2 * 32 + 1) * 4096  # minus embedding and the 65 RMSNorm weights
    attn_per_token = 4 * 2048 * 32 * 128 * 32 // 2 * 7 // 2  # fwd 1x + bwd 2.5x
    assert f.total_flops == (6 * gemm_n + attn_per_token) * 2048


CARD = GPU(
    name="test card",
    memory_bytes=10**12,
    bf16=True,
    peak_bf16_tflops=100.0,
    peak_fp16_tflops=200.0,
    source="test",
    memory_bandwidth_bytes_per_s=10**12,
)


def test_step_time_by_hand():
    spec = tiny(method="lora", optimizer="sgd")
    t = estimate_time(spec, CARD)
    flops = 6_553_600 + 860_160 + 114_688  # LoRA, sdpa, no checkpointing
    compute_s = flops / (0.35 * 100e12)
    # SGD without momentum: read+write the fp32 adapters (2 x 35,840 B) and read their gradients (35,840 B);
    # adapter bytes = 4 bytes x N_adapter = 35,840, each tensor already a multiple of 512 bytes
    opt_s = (2 * 35_840 + 35_840) / 1e12
    assert t.step_s == pytest.approx(compute_s + opt_s, rel=1e-12)
    assert t.tokens_per_s == pytest.approx(16 / (compute_s + opt_s), rel=1e-12)
    assert t.mfu == pytest.approx((flops - 16_384) / ((compute_s + opt_s) * 100e12), rel=1e-12)


def test_grad_accum_wall_time_and_cost():
    one = estimate_time(tiny(method="lora", optimizer="sgd"), CARD)
    four = estimate_time(
        tiny(method="lora", optimizer="sgd", grad_accum=4), CARD, total_tokens=6_400_000, price_usd_per_h=2.0
    )
    micro = one.compute_s
    opt_s = 107_520 / 1e12
    assert four.step_s == pytest.approx(4 * micro + opt_s, rel=1e-12)
    assert four.tokens_per_step == 64
    assert four.wall_s == pytest.approx(6_400_000 / (64 / four.step_s), rel=1e-12)
    assert four.cost_usd == pytest.approx(four.wall_s / 3600 * 2.0, rel=1e-12)
    assert four.price_source == "--price"


def test_fp16_uses_fp16_peak():
    bf = estimate_time(
        tiny(method="full", optimizer="sgd"), dataclasses.replace(CARD, memory_bandwidth_bytes_per_s=None)
    )
    fp = estimate_time(
        tiny(method="full", optimizer="sgd", dtype="fp16"), dataclasses.replace(CARD, memory_bandwidth_bytes_per_s=None)
    )
    assert bf.step_s == pytest.approx(2 * fp.step_s, rel=1e-12)  # 100 vs 200 TFLOP/s, no memory terms
    assert any("no bandwidth" in n for n in bf.notes)


@pytest.mark.parametrize(
    ("gpu", "kw", "why"),
    [
        ("24GB", {}, "bare memory size"),
        ("h100", {"dtype": "fp32"}, "fp32"),
        ("t4", {"dtype": "bf16"}, "no bf16"),
    ],
)
def test_no_speed_without_a_peak(gpu, kw, why):
    t = estimate_time(tiny(method="full", **kw), resolve_gpu(gpu), total_tokens=1000, price_usd_per_h=1.0)
    assert t.step_s is None and t.tokens_per_s is None and t.cost_usd is None
    assert any(why in n for n in t.notes)


def test_mfu_for_defaults_and_calibration():
    value, source = mfu_for("H100 SXM", "qlora")
    assert 0 < value <= 1 and "assumed default" in source
    value, source = mfu_for("H100 SXM", "qlora", {("H100 SXM", "qlora"): 0.41})
    assert value == 0.41 and "calibrated" in source
    with pytest.raises(ValueError, match="must be in"):
        mfu_for("H100 SXM", "lora", {("H100 SXM", "lora"): 1.5})


def test_catalog_prices_have_sources():
    for g in __import__("lora_budget.catalog.gpus", fromlist=["catalog"]).catalog():
        if g.price_usd_per_hour is not None:
            assert "http" in g.price_source or "20" in g.price_source  # a dated, citable source
        assert g.memory_bandwidth_bytes_per_s is None or g.memory_bandwidth_bytes_per_s > 10**11


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_tokens_and_price():
    r = run("plan", "-m", "7b", "-g", "rtx4090", "--method", "qlora", "--tokens", "100M", "--price", "0.5", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["methods"][0]
    assert m["total_tokens"] == 100_000_000
    assert m["wall_s"] == pytest.approx(1e8 / m["tokens_per_s"], rel=1e-9)
    assert m["cost_usd"] == pytest.approx(m["wall_s"] / 3600 * 0.5, rel=1e-9)
    assert m["step_s"] == pytest.approx(2048 / m["tokens_per_s"], rel=1e-9)
    r = run("plan", "-m", "7b", "-g", "rtx4090", "--method", "qlora", "--dataset-tokens", "25M", "--epochs", "4")
    assert r.exit_code == 0 and "100,000,000 tokens in" in r.output and "tokens/s" in r.output


def test_cli_bare_size_says_why_no_speed():
    r = run("plan", "-m", "7b", "-g", "24GB", "--method", "qlora", "--tokens", "1e8", "--price", "0.5", "--json")
    data = json.loads(r.output)
    assert data["methods"][0]["tokens_per_s"] is None and data["methods"][0]["cost_usd"] is None
    assert any("bare memory size" in n for n in data["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokens", "lots"], "not a token count"),
        (["--tokens", "0"], "at least 1 token"),
        (["--tokens", "1M", "--dataset-tokens", "1M"], "not both"),
        (["--epochs", "2"], "needs --dataset-tokens"),
        (["--price", "-1"], "--price must be a finite number"),
    ],
)
def test_cli_bad_speed_input(args, message):
    r = run("plan", *args)
    assert r.exit_code == 2 and message in r.output


def test_a_trace_derived_moe_routes_top_k_of_its_experts():
    """A trace-derived MoE shape carries no expert counts (its coefficients come from the trace), so the
    FLOPs read top-k and E from the config it was derived from: DeepSeek-V2-Lite's config.json sets
    n_routed_experts 64 and num_experts_per_tok 6 (models_derived.json); it once divided by zero."""
    from lora_budget.perf.flops import routing

    assert routing(resolve_model("DeepSeek-V2-Lite").shape) == (6, 64)
    assert routing(resolve_model("Mixtral-8x7B-v0.1").shape) == (2, 8)  # analytical: num_local_experts 8, top-2
