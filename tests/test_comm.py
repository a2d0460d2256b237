"""Communication bytes and time on N GPUs against values derived by hand in this file.

The tiny Llama of tests/tiny_models.py: h = 64, L = 2, 4 heads of 16, 2 KV heads (kv width 32), gated
MLP i = 160, V = 256, untied lm_head, no biases.

Parameters: embedding 256 x 64 = 16,384; per layer q 4,096, k 2,048, v 2,048, o 4,096, gate/up/down
10,240 each (43,008 linear weights) + two RMSNorm weights of 64 (128); final norm 64; lm_head 16,384.
Total 16,384 + 2 x 43,136 + 64 + 16,384 = 119,104. LoRA r = 4 on all linears: r x (in + out) per
module, q 512, k 384, v 384, o 512, gate/up/down 896 each = 4,480 per layer, 8,960 in all; adapters
are fp32 (peft's default), so G_lora = 4 x 8,960 = 35,840 bytes.

Full fine-tuning in bf16: G = W = 2 x 119,104 = 238,208 bytes. Sharded gathers: P_layers = 2 x 2 x
43,136 = 172,544, P_root = 2 x (16,384 + 64 + 16,384) = 65,664, P = 238,208.

Ring bytes per GPU on N = 4: all-reduce 2 x 3/4 x S, all-gather / reduce-scatter 3/4 x S
(nccl-tests doc/PERFORMANCE.md). The test card's NVLink runs 10^11 B/s per direction, at
LINK_EFFICIENCY = 0.8: 8 x 10^10 B/s effective.
"""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from lora_budget.catalog.gpus import _checked, catalog, resolve_gpu
from lora_budget.cli import main
from lora_budget.errors import LoraBudgetError
from lora_budget.perf.comm import LINK_EFFICIENCY, estimate_comm, parameter_bytes, ring_link, traffic
from lora_budget.perf.time import estimate_time
from lora_budget.spec import TrainSpec
from tests.test_perf import CARD as PERF_CARD
from tests.tiny_models import tiny_ref

G_FULL = 238_208
P_LAYERS, P_ROOT = 172_544, 65_664
G_LORA = 35_840
EFF = 0.8e11

# the speed tests' card (100 / 200 TFLOP/s, 1 TB/s) with an NVSwitch node of 8 at 100 GB/s per direction
CARD = dataclasses.replace(PERF_CARD, nvlink_bytes_per_s=10**11, nvlink_gpus=8, pcie_gen=4, interconnect_source="test")


def tiny(**kw):
    base = dict(model=tiny_ref("llama"), batch_size=2, seq_len=8, rank=4)
    base.update(kw)
    return TrainSpec(**base)


def test_hand_derived_payloads():
    assert LINK_EFFICIENCY == 0.8  # the module docstring's figure, which EFF above assumes
    assert parameter_bytes(tiny(method="full", gpus=4, strategy="fsdp")) == (P_LAYERS, P_ROOT)
    # QLoRA packs two 4-bit weights per byte; per layer: 43,008 / 2 = 21,504 packed linear bytes + 2 x 64 x 2
    # bf16 norm bytes (256) + 4,480 x 4 fp32 adapter bytes (17,920) = 39,680; the root stays bf16
    assert parameter_bytes(tiny(method="qlora", gpus=4, strategy="fsdp")) == (2 * 39_680, P_ROOT)


def test_one_gpu_has_no_communication():
    t = estimate_time(tiny(method="full", optimizer="sgd"), CARD)
    assert t.comm_bytes == 0 and t.offload_bytes == 0 and t.comm is None
    assert traffic(tiny(method="lora")).link_bytes == 0
    assert "comm_bytes" not in t.to_dict()


def test_ddp_lora_all_reduce_and_overlap():
    """DDP, LoRA, 4 GPUs: one all-reduce of the fp32 adapter gradients, 2 x 3/4 x 35,840 = 53,760 B,
    53,760 / 8e10 = 6.72e-7 s. It hides behind the backward: LoRA with sdpa runs 7,528,448 FLOPs per
    micro-batch (tests/test_perf.py), of which the forward is 2 x (86,016 + 16,384 + 8,960) x 16 + the
    causal attention forward 32,768 = 3,596,288; backward 3,932,160 FLOPs at 0.35 x 100 TFLOP/s =
    1.12347e-7 s, so 6.72e-7 - 1.12347e-7 s is exposed. With 4 micro-batches DDP still all-reduces once
    (no_sync), so the bytes are the same."""
    spec = tiny(method="lora", optimizer="sgd", gpus=4)
    t = estimate_time(spec, CARD)
    assert t.comm_bytes == 53_760
    assert t.comm_s == pytest.approx(6.72e-7, rel=1e-12)
    assert t.utilization == 0.35  # the assumed LoRA default (lora_budget/perf/utilization.py)
    backward_s = 3_932_160 / (0.35 * 100e12)
    assert t.comm_exposed_s == pytest.approx(6.72e-7 - backward_s, rel=1e-9)
    one = estimate_time(tiny(method="lora", optimizer="sgd"), CARD)
    assert t.step_s == pytest.approx(one.step_s + 6.72e-7 - backward_s, rel=1e-12)
    assert t.tokens_per_s == pytest.approx(4 * 16 / t.step_s, rel=1e-12)
    assert traffic(tiny(method="lora", gpus=4, grad_accum=4)).link_bytes == 53_760


def test_fsdp_full_gathers_and_reduce_scatter():
    """FSDP2, full bf16, 4 GPUs, 2 micro-batches. Per micro-batch: forward all-gather of P = 238,208
    (3/4 -> 178,656), backward all-gather of the layers only (the root stays unsharded) 3/4 x 172,544 =
    129,408, reduce-scatter of G 3/4 x 238,208 = 178,656. Per step: forward 357,312, backward 616,128,
    973,440 in all, 973,440 / 8e10 = 1.2168e-5 s."""
    t = traffic(tiny(method="full", gpus=4, strategy="fsdp", grad_accum=2))
    assert (t.forward_bytes, t.backward_bytes, t.exposed_bytes) == (357_312, 616_128, 0)
    est = estimate_time(tiny(method="full", gpus=4, strategy="fsdp", grad_accum=2), CARD)
    assert est.comm_bytes == 973_440
    assert est.comm_s == pytest.approx(973_440 / EFF, rel=1e-12)
    # checkpointing adds recompute FLOPs but no gather (FSDP2 reuses the layer unsharded for its backward)
    assert traffic(tiny(method="full", gpus=4, strategy="fsdp", grad_accum=2, grad_ckpt=True)) == t


def test_zero3_gathers_everything_twice():
    """ZeRO-3: forward and backward each gather all of P (root included): 2 x 178,656 + RS 178,656."""
    t = traffic(tiny(method="full", gpus=4, strategy="zero3"))
    assert (t.forward_bytes, t.backward_bytes) == (178_656, 357_312)


def test_zero2_and_zero1():
    """ZeRO-2, full bf16, 4 GPUs: reduce-scatter G every micro-batch (3/4 x 238,208 = 178,656, overlapping
    the backward) and after the step an all-gather of the updated W = G (178,656, exposed: 2.2332e-6 s).
    ZeRO-1 reduces once at the boundary with no backward hooks: both exposed."""
    z2 = traffic(tiny(method="full", gpus=4, strategy="zero2", grad_accum=3))
    assert (z2.backward_bytes, z2.exposed_bytes) == (3 * 178_656, 178_656)
    est = estimate_time(tiny(method="full", gpus=4, strategy="zero2"), CARD)
    assert est.comm_bytes == 2 * 178_656
    # full bf16, sdpa: 6 x 102,400 x 16 GEMM FLOPs + attention 114,688; forward 2 x 102,400 x 16 + 32,768;
    # the backward (6,635,520 FLOPs at the assumed 40 % full fine-tuning utilization of 100 TFLOP/s ->
    # 1.6589e-7 s) is shorter than the reduce-scatter (2.2332e-6 s)
    assert est.utilization == 0.40
    backward_s = (9_830_400 + 114_688 - 3_309_568) / (0.40 * 100e12)
    assert est.comm_exposed_s == pytest.approx(178_656 / EFF + (178_656 / EFF - backward_s), rel=1e-9)
    z1 = traffic(tiny(method="full", gpus=4, strategy="zero1", grad_accum=3))
    assert (z1.backward_bytes, z1.exposed_bytes) == (0, 2 * 178_656)


def test_offload_rides_pcie():
    """--offload optimizer (zero2): each GPU sends G / 4 = 59,552 down and W / 4 = 59,552 up per step,
    119,104 B at PCIe Gen4 (32e9 B/s per direction, x 0.8). --offload params (fsdp): shards up before
    each gather, P / 4 = 59,552 forward, P_layers / 4 = 43,136 backward, and the gradient shard down 59,552."""
    z2 = tiny(method="full", gpus=4, strategy="zero2", offload="optimizer")
    assert traffic(z2).pcie_exposed_bytes == 119_104
    with_offload = estimate_time(z2, CARD).comm_s
    without = estimate_time(tiny(method="full", gpus=4, strategy="zero2"), CARD).comm_s
    assert with_offload - without == pytest.approx(119_104 / (32e9 * 0.8), rel=1e-9)
    fs = traffic(tiny(method="full", gpus=4, strategy="fsdp", offload="params"))
    assert (fs.pcie_forward_bytes, fs.pcie_backward_bytes, fs.pcie_exposed_bytes) == (59_552, 43_136 + 59_552, 0)


@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_more_gpus_never_send_less_per_gpu(strategy):
    """Every ring term is (N-1)/N of a payload that does not depend on N: per-GPU link bytes rise with N
    toward a limit (2 G for DDP's all-reduce, 2 G for ZeRO-1/2, 2P + G for ZeRO-3) and never reach it."""
    from lora_budget.catalog.models import resolve_model

    base = dict(model=resolve_model("7b"), method="full")
    sent = [traffic(TrainSpec(**base, gpus=n, strategy=strategy)).link_bytes for n in range(2, 17)]
    assert sent == sorted(sent) and len(set(sent)) == len(sent)
    g = 2 * 6_738_415_616
    limit = {"ddp": 2 * g, "zero1": 2 * g, "zero2": 2 * g, "zero3": 3 * g, "fsdp": 3 * g}[strategy]
    assert sent[-1] < limit and sent[0] <= limit // 2  # N = 2 moves (N-1)/N = half of each payload


def test_ring_link_tiers():
    """NVLink inside its domain; a bridged pair's third GPU rides PCIe; beyond 8 GPUs the network
    (400 Gb/s = 5e10 B/s per GPU) when slower than the card's own link."""
    a40, h100 = resolve_gpu("a40"), resolve_gpu("h100-sxm")
    assert ring_link(a40, 2) == ("NVLink", 56_250_000_000)  # 112.5 GB/s both directions, halved
    assert ring_link(a40, 4) == ("PCIe Gen4 x16", 32 * 10**9)
    assert ring_link(h100, 8) == ("NVLink", 450 * 10**9)
    assert ring_link(h100, 16) == ("400 Gb/s network", 50 * 10**9)
    assert ring_link(h100, 16, inter_node_gbps=4000) == ("NVLink", 450 * 10**9)
    assert ring_link(resolve_gpu("rtx4090"), 2) == ("PCIe Gen4 x16", 32 * 10**9)


def test_unknown_link_leaves_time_out_with_a_note():
    est = estimate_comm(tiny(method="full", gpus=2), resolve_gpu("mi300x"), 1.0, 1.0)
    assert est.comm_s is None and est.comm_exposed_s is None and est.comm_bytes == G_FULL  # 2 x 1/2 x G
    assert "no GPU-GPU link figure" in est.note
    t = estimate_time(tiny(method="full", gpus=2), resolve_gpu("mi300x"))
    assert t.step_s is not None and t.comm_s is None


@pytest.mark.parametrize("gpu", catalog(), ids=lambda g: g.name)
def test_catalog_interconnect_has_a_source(gpu):
    if gpu.nvlink_bytes_per_s or gpu.pcie_gen:
        assert gpu.interconnect_source.startswith("NVIDIA ")  # names the vendor document it comes from
    assert gpu.nvlink_bytes_per_s is None or 10**10 < gpu.nvlink_bytes_per_s <= 10**12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nvlink_gb_s": -1}, "positive"),
        ({"nvlink_gpus": 1}, "nvlink_gpus"),
        ({"pcie_gen": 7}, "pcie_gen"),
        ({"interconnect_source": ""}, "interconnect_source"),
    ],
)
def test_catalog_rows_are_checked(change, message):
    row = {"name": "card", "nvlink_gb_s": 600, "nvlink_gpus": 8, "pcie_gen": 4, "interconnect_source": "datasheet"}
    _checked(row)
    with pytest.raises(ValueError, match=message):
        _checked({**row, **change})


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_shows_comm_for_multi_gpu_only():
    args = ("plan", "-m", "7b", "-g", "h100-sxm", "--method", "full")
    multi = run(*args, "--gpus", "8", "--strategy", "zero2")
    assert multi.exit_code == 0 and "comm (GB/step)" in multi.output and "comm exposed (s)" in multi.output
    assert "communication time is not modelled" not in multi.output
    single = run(*args)
    assert "comm" not in single.output
    data = json.loads(run(*args, "--gpus", "8", "--strategy", "zero2", "--json").output)["methods"][0]["time"]
    # 7B full bf16, zero2 on 8: reduce-scatter + all-gather of G = 2 x 6,738,415,616 bytes, 7/8 each
    assert data["comm_bytes"] == 2 * 7 * (2 * 6_738_415_616) // 8
    assert data["comm_link"] == "NVLink" and data["comm_exposed_s"] <= data["comm_s"]


def test_cli_inter_node_bandwidth():
    args = ("plan", "-m", "7b", "-g", "h100-sxm", "--method", "full", "--gpus", "16", "--strategy", "zero2", "--json")
    slow = json.loads(run(*args, "--inter-node-gbps", "100").output)["methods"][0]["time"]
    assert slow["comm_link"] == "100 Gb/s network" and slow["comm_link_bytes_per_s"] == 12_500_000_000
    bad = run(*args, "--inter-node-gbps", "0")
    assert bad.exit_code == 2 and "--inter-node-gbps must be a finite number in [0.01, 100000]" in bad.output


def test_api_rejects_bad_inter_node_bandwidth():
    from lora_budget.api import plan

    with pytest.raises(LoraBudgetError, match="inter-node"):
        plan("7b", "h100-sxm", "full", gpus=16, strategy="zero2", inter_node_gbps=-1)


def test_card_without_pcie_figure_is_not_timed_for_offload():
    card = dataclasses.replace(CARD, pcie_gen=None)
    est = estimate_comm(tiny(method="full", gpus=4, strategy="zero2", offload="optimizer"), card, 1.0, 1.0)
    assert est.comm_s is None and "host PCIe link" in est.note
