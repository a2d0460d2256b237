"""Library-version behaviour: the Trainer's default optimizer, the foreach AdamW step, transformers 4.x's
quantized MoE experts. Expected values are derived by hand below, from the sources the spec cites."""

from __future__ import annotations

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.core.static import static_memory
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec, default_optimizer
from tests.tiny_models import tiny_ref


@pytest.mark.parametrize(
    ("framework", "transformers", "torch", "expected"),
    [
        # TrainingArguments: default_optim = "adamw_torch", "adamw_torch_fused" if torch >= 2.8 (from 4.54)
        ("hf-trainer", "4.48.1", "2.4.1", "adamw_foreach"),
        ("hf-trainer", "4.53.3", "2.9", "adamw_foreach"),  # the rule is not in 4.53.3's training_args.py
        ("hf-trainer", "4.54.1", "2.7.1", "adamw_foreach"),  # torch below 2.8
        ("hf-trainer", "4.54.1", "2.8", "adamw"),
        ("hf-trainer", "5.24", "2.13", "adamw"),
        ("plain", "4.48.1", "2.4.1", "adamw"),  # the reference loop names its fused AdamW itself
    ],
)
def test_trainer_default_optimizer(framework, transformers, torch, expected):
    assert default_optimizer(framework, transformers, torch) == expected
    spec = TrainSpec(model=tiny_ref("llama"), framework=framework, transformers=transformers, torch=torch)
    assert spec.optimizer == expected


def test_named_optimizer_wins_and_bad_versions_are_refused():
    spec = TrainSpec(model=tiny_ref("llama"), transformers="4.48.1", torch="2.4.1", optimizer="adamw")
    assert spec.optimizer == "adamw"
    for field in ("transformers", "torch"):
        with pytest.raises(LoraBudgetError, match=f"{field} version must look like"):
            TrainSpec(model=tiny_ref("llama"), **{field: "latest"})


# Tiny Llama (tests/tiny_models.py: h 64, 2 layers, 4 heads of 16, 2 KV heads, i 160, V 256, untied),
# bf16, full fine-tuning. Per tensor in bytes (allocator blocks of 512):
#   embed_tokens, lm_head 256*64*2 = 32768 each; final norm 64*2 -> 512
#   per layer: q, o 64*64*2 = 8192; k, v 32*64*2 = 4096; gate, up, down 160*64*2 = 20480; 2 norms 512
#   = 2*8192 + 2*4096 + 3*20480 + 2*512 = 87040 per layer
# one moment of every parameter: 2*32768 + 512 + 2*87040 = 240128; 21 tensors (2 + 1 + 2*9).
MOMENT = 240128
TENSORS = 21


def test_foreach_adamw_state_and_step_temporary_by_hand():
    ref = tiny_ref("llama")
    fused = static_memory(TrainSpec(model=ref, method="full", optimizer="adamw"))
    foreach = static_memory(TrainSpec(model=ref, method="full", optimizer="adamw_foreach"))
    # fused: two moments and a 4-byte device step per tensor; foreach: the step is a CPU scalar
    assert fused.optimizer == 2 * MOMENT + TENSORS * 512
    assert foreach.optimizer == 2 * MOMENT
    # foreach's step holds torch._foreach_sqrt(exp_avg_sqs): one more moment; the fused kernel none
    assert fused.optimizer_step_temp == 0
    assert foreach.optimizer_step_temp == MOMENT


@pytest.mark.torch
def test_foreach_adamw_plan_matches_its_trace():
    pytest.importorskip("transformers")
    from lora_budget.core.model import peak_model
    from lora_budget.trace.engine import trace

    spec = TrainSpec(model=tiny_ref("llama"), method="full", optimizer="adamw_foreach", batch_size=2, seq_len=16)
    traced = trace(spec)
    model = peak_model(spec)
    assert traced.peak_op == "_foreach_sqrt.default"
    assert model.breakdown(2, 16).phase == "optimizer"
    # the trace runs on fake CPU tensors, where foreach's CPU step scalars (one 512-byte block per
    # tensor) look like device memory; on CUDA they are host memory, as the plan has them
    device = traced.peak_bytes - TENSORS * 512
    assert abs(model.peak_bytes(2, 16) - device) <= 0.005 * device


# Mixtral-8x7B (h 4096, i 14336, 8 experts, 32 layers). transformers 5: per layer gate_up_proj
# (8, 28672, 4096) and down_proj (8, 4096, 14336) in bf16 = 3 * 8 * 4096 * 14336 * 2 = 2818572288 B,
# router (8, 4096) bf16 = 65536 B. transformers 4.x: 3 * 8 nn.Linear of 4096 x 14336 per layer in NF4
# = 4096 * 14336 / 2 = 29360128 B each, router nn.Linear in NF4 = 8 * 4096 / 2 = 16384 B.
# Double-quant state of one 4096 x 14336 linear: 917504 blocks of 64 -> 917504 B uint8 absmax +
# 4 * 3584 = 14336 B fp32 absmax of those + 512 (offset) + 512 (16-entry code) + 1024 (256-entry map)
# = 933888 B; of the router (32768 weights: 512 blocks): 512 + 512 + 512 + 512 + 1024 = 3072 B,
# where transformers 5 holds no state for it.
EXPERTS_5 = 32 * (2818572288 + 65536)
EXPERTS_4 = 32 * (24 * 29360128 + 16384)
STATE_4 = 32 * (24 * 933888 + 3072)


def test_transformers4_quantizes_mixtral_experts():
    ref = resolve_model("Mixtral-8x7B-v0.1")
    kw = dict(model=ref, method="qlora", targets="q_proj,k_proj,v_proj,o_proj", kbit_prep=False)
    new = static_memory(TrainSpec(**kw))
    old = static_memory(TrainSpec(**kw, transformers="4.48.1"))
    assert new.weights - old.weights == EXPERTS_5 - EXPERTS_4
    assert old.quant_state - new.quant_state == STATE_4
    # 16-bit LoRA on the same model: nothing is quantized, the layout does not change a byte
    lora = dict(kw, method="lora", kbit_prep=None)
    assert static_memory(TrainSpec(**lora)).weights == static_memory(TrainSpec(**lora, transformers="4.48.1")).weights


# transformers' causal-LM loss by release, in bytes per vocabulary entry per token (c: the logits' bytes):
#   >= 4.49 (labels shifted):               c (16-bit logits) + 4 (their fp32 copy) + 4 (log_softmax) = c + 8
#   4.46-4.48 (loss_utils.py 36-38):        c + 4 + 4 (shift_logits ... .contiguous()) + 4 = c + 12
#   <= 4.45 (model upcasts, 16-bit freed):  4 + 4 + 4 = 12
# The shifted copy (4) only with b > 1: one row's logits[..., :-1, :] is contiguous, .contiguous() copies nothing.
# Tiny Llama (V 256), LoRA under the Trainer's autocast (c = 2): per token (per_entry * 256) bytes.


@pytest.mark.parametrize(("release", "per_entry"), [("5.24", 2 + 8), ("4.48.1", 2 + 12), ("4.45.2", 12)])
def test_loss_logits_terms_by_release(release, per_entry):
    from lora_budget.core.model import peak_model

    shift = 0 if release == "5.24" else 4
    spec = TrainSpec(model=tiny_ref("llama"), batch_size=2, seq_len=64, rank=4, transformers=release)
    k = peak_model(spec)._k
    assert (k.loss_fwd + k.shift_copy, k.shift_copy) == (per_entry * 256, shift * 256)
    # kbit-prepared QLoRA without autocast: the head's logits are already fp32, ``.float()`` copies nothing
    prepared = TrainSpec(
        model=tiny_ref("llama"), method="qlora", kbit_prep=True, autocast=False, transformers=release, rank=4
    )
    k = peak_model(prepared)._k
    assert k.loss_fwd + k.shift_copy == {"5.24": 8, "4.48.1": 12, "4.45.2": 12}[release] * 256


@pytest.mark.torch
@pytest.mark.parametrize(("release", "b"), [("4.48.1", 2), ("4.45.2", 2), ("4.48.1", 1)])
def test_legacy_loss_plan_matches_its_trace(release, b):
    """The trace runs the old loss's steps (runtime/legacy_loss.py) on the installed model; the peak
    moves to the loss (cross-entropy's forward), as the plan has it, within 0.5 %.
    At b = 1 the shift copies nothing, in the trace as in the plan."""
    pytest.importorskip("transformers")
    from lora_budget.core.model import peak_model
    from lora_budget.trace.engine import trace

    # fused AdamW named: the Trainer's default for these releases is foreach, whose CPU step scalars
    # the fake CPU trace would count (test_foreach_adamw_plan_matches_its_trace)
    spec = TrainSpec(
        model=tiny_ref("llama"),
        batch_size=b,
        seq_len=64 * (3 - b),
        rank=4,
        transformers=release,
        optimizer="adamw",
    )
    traced = trace(spec)
    model = peak_model(spec)
    plan = model.peak_bytes(b, spec.seq_len)
    assert abs(plan - traced.peak_bytes) <= 0.005 * traced.peak_bytes, (plan, traced.peak_bytes, traced.peak_op)
    if b > 1:  # without the copy (b = 1) the step peaks in backward, in both
        assert traced.peak_op == "nll_loss_forward.default"
        assert model.breakdown(b, spec.seq_len).phase == "loss"


def test_mixtral_on_transformers4_refusals():
    ref = resolve_model("Mixtral-8x7B-v0.1")
    with pytest.raises(LoraBudgetError, match="adapts every MoE expert"):
        TrainSpec(model=ref, method="qlora", targets="all-linear", transformers="4.48.1")
    spec = TrainSpec(model=ref, method="qlora", targets="q_proj,v_proj", transformers="4.48.1")
    assert spec.experts_quantized
    pytest.importorskip("transformers")
    from lora_budget.trace.engine import trace

    with pytest.raises(LoraBudgetError, match="not traced"):
        trace(spec)
