"""Preference, RL and reward objectives: the planner against a trace of TRL's own loss, and derivations.

The trace (``runtime/objectives.py``) runs each trainer's loss as TRL v1.9.0 computes it, with TRL's
``selective_log_softmax`` and ``entropy_from_logits``, on a 2-layer copy of Qwen2.5-0.5B at real
width and vocabulary (b = 2, s = 256), so the logits terms (151,936 entries per position) dominate
and are tested exactly.
"""

from __future__ import annotations

import dataclasses

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.configs import load_config
from lora_budget.core.model import estimate
from lora_budget.core.objectives import objective_loss
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec
from tests.tiny_models import truncated

CORPUS = "tests/data/configs/corpus"

CASES = {
    "dpo-lora": dict(method="lora", objective="dpo"),
    "dpo-lora-ckpt": dict(method="lora", objective="dpo", grad_ckpt=True),
    "dpo-full-copy": dict(method="full", objective="dpo"),
    "dpo-hf-trainer": dict(method="lora", objective="dpo", framework="hf-trainer"),
    "orpo-lora": dict(method="lora", objective="orpo"),
    "grpo-lora": dict(method="lora", objective="grpo", completion_len=128),
    "grpo-full-copy": dict(method="full", objective="grpo", completion_len=128, reference="copy"),
    "dpo-lora-fp32": dict(method="lora", objective="dpo", dtype="fp32"),
    "grpo-lora-fp32": dict(method="lora", objective="grpo", completion_len=128, dtype="fp32"),
    "reward-full": dict(method="full", objective="reward"),
    "reward-lora": dict(method="lora", objective="reward"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_trace_of_trl_loss(case):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from lora_budget.trace.engine import trace

    spec = TrainSpec(model=truncated("Qwen2.5-0.5B", 2), batch_size=2, seq_len=256, **CASES[case])
    traced = trace(spec).breakdown
    planned = estimate(spec)
    # a reward model has no vocabulary logits, which exposes the planner's estimate of a LoRA
    # layer's MLP backward working set (an upper bound, +13 KB per token here; an SFT step's
    # logits peak hides it): known error, within 2 %
    tolerance = 0.02 if case == "reward-lora" else 0.005
    assert abs(planned.peak_bytes / traced.peak_bytes - 1) <= tolerance
    if case.startswith(("dpo", "orpo")) and "fp32" not in case:
        assert planned.phase == traced.phase == "loss"


def test_dpo_logits_terms_by_hand():
    """TRL's DPO loss on b = 2 pairs of s = 256 (rows = 4 sequences), bf16 logits (c = 2), V = 151,936.

    Loss phase: the policy's logits (4 x 256 positions) and its saved per-row log_softmax outputs of
    the shifted logits (4 x 255), then the reference's logits (4 x 256) and two rows of its row loop
    (2 x 255): 1024 + 1020 + 1024 + 510 = 3578 positions. Backward: the stacked row gradients
    (4 x 255) and the slice's zero tensor (4 x 256): 2044 positions. Without a reference: 2044 both.
    """
    cv = 2 * 151_936
    ref = resolve_model("Qwen2.5-0.5B")
    dpo = objective_loss(TrainSpec(model=ref, objective="dpo"), 2)
    assert dpo.logits_bytes(4, 256) == (3578 * cv, 2044 * cv)
    orpo = objective_loss(TrainSpec(model=ref, objective="orpo"), 2)
    assert orpo.logits_bytes(4, 256) == (2044 * cv, 2044 * cv)
    pre = objective_loss(TrainSpec(model=ref, objective="dpo", reference="precomputed"), 2)
    assert pre.logits_bytes(4, 256) == (2044 * cv, 2044 * cv)


def test_grpo_logits_terms_by_hand():
    """GRPO, b = 2 completions of C = 128 tokens: logits at C + 1 = 129 positions per row (258), the
    saved rows (256), entropy's contiguous copy (256) and one 128-position chunk's log_softmax, exp
    and product (384): 1154 positions. Backward: stacked rows and inner slice (256 each), outer slice
    and the CopySlices clone of the in-place division (258 each): 1028."""
    cv = 2 * 151_936
    spec = TrainSpec(model=resolve_model("Qwen2.5-0.5B"), objective="grpo", completion_len=128, seq_len=256)
    assert objective_loss(spec, 2).logits_bytes(2, 256) == (1154 * cv, 1028 * cv)
    # TRL's default completion, 256 tokens, at most s - 1
    assert TrainSpec(model=spec.model, objective="grpo", seq_len=200).completion_tokens == 199
    assert TrainSpec(model=spec.model, objective="grpo", seq_len=2048).completion_tokens == 256


def test_pairs_double_the_forward():
    """A preference pair puts two sequences through the forward: DPO without a reference (orpo) at
    b has exactly the activations of SFT at 2b."""
    ref = resolve_model("Llama-3.2-1B")
    kw = dict(seq_len=512, grad_ckpt=True, framework="plain")
    pair = estimate(TrainSpec(model=ref, objective="orpo", batch_size=2, **kw))
    sft = estimate(TrainSpec(model=ref, batch_size=4, **kw))
    assert pair.activations == sft.activations


def test_reference_copy_doubles_weights():
    ref = resolve_model("Llama-3.2-1B")
    full = estimate(TrainSpec(model=ref, method="full", objective="dpo"))
    sft = estimate(TrainSpec(model=ref, method="full"))
    assert full.weights == 2 * sft.weights
    lora = estimate(TrainSpec(model=ref, method="lora", objective="dpo"))
    assert lora.weights == estimate(TrainSpec(model=ref, method="lora")).weights


def test_reward_model_has_no_lm_head():
    """Llama-3.2-1B ties its embeddings: the classifier keeps the embedding (V x h) only. Llama-2-7B
    does not: its reward model drops lm_head, 32,000 x 4,096 bf16 = 262,144,000 bytes."""
    llama2 = resolve_model("7b")
    sft = estimate(TrainSpec(model=llama2, method="lora"))
    reward = estimate(TrainSpec(model=llama2, method="lora", objective="reward"))
    assert sft.weights - reward.weights == 32_000 * 4_096 * 2
    assert reward.logits == 0


def test_grpo_generation_phase():
    """transformers' generate for b x accumulation sequences: the KV cache (2 L kv_width c per token)
    and one fp32 logits row per sequence. Llama-3.1-8B (L = 32, kv_width = 1024), b = 8, accum 16,
    s = 4096: KV = 128 x 4096 x 2 x 32 x 1024 x 2 = 68,719,476,736 bytes, above the training step."""
    ref = resolve_model("8b")
    spec = TrainSpec(model=ref, objective="grpo", batch_size=8, grad_accum=16, seq_len=4096, grad_ckpt=True)
    b = estimate(spec)
    assert b.phase == "generation"
    assert b.temporaries == 128 * 4096 * 2 * 32 * 1024 * 2
    assert b.logits == 128 * 4 * 128_256
    assert estimate(dataclasses.replace(spec, vllm=True)).phase != "generation"


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(method="full", objective="dpo", reference="adapter"), "full fine-tuning has none"),
        (dict(objective="sft", reference="copy"), "applies to dpo, ipo and grpo"),
        (dict(objective="dpo", completion_len=100), "grpo only"),
        (dict(objective="grpo", seq_len=128, completion_len=128), "leaves no prompt"),
        (dict(objective="grpo", reference="precomputed"), "cannot be precomputed"),
        (dict(objective="dpo", loss="chunked-ce"), "computes its own loss"),
        (dict(objective="kto"), "unknown objective"),
    ],
)
def test_objective_errors(kw, fragment):
    with pytest.raises(LoraBudgetError, match=fragment):
        TrainSpec(model=resolve_model("Qwen2.5-0.5B"), **kw)


@pytest.mark.parametrize(
    "path, expected",
    [
        # axolotl: rl: dpo (utils/schemas/enums.py RLType), LoRA: the adapter-disabled reference
        (f"{CORPUS}/axolotl/examples/swanlab/dpo-swanlab-completions.yml", dict(objective="dpo")),
        (f"{CORPUS}/axolotl/examples/mistral/orpo/mistral-qlora-orpo.yml", dict(objective="orpo")),
        # axolotl: reward_model: true
        (f"{CORPUS}/axolotl/examples/qwen2/reward-model.yaml", dict(objective="reward")),
        # LLaMA-Factory: stage: dpo
        (f"{CORPUS}/llamafactory/v0.9.5/examples/train_lora/qwen3_lora_dpo.yaml", dict(objective="dpo")),
        # open-r1 GRPO recipe: num_generations 16, max_completion_length 1024, max_prompt_length 512,
        # use_vllm true (the file's own values)
        (
            f"{CORPUS}/open-r1/recipes/Qwen2.5-1.5B-Instruct/grpo/config_demo.yaml",
            dict(objective="grpo", generations=16, completion_len=1024, seq_len=1536, vllm=True),
        ),
    ],
)
def test_config_objectives(path, expected):
    values = load_config(path).values
    assert {k: values.get(k) for k in expected} == expected


def _plan(*args: str) -> str:
    from click.testing import CliRunner

    from lora_budget.cli import main

    result = CliRunner().invoke(main, ["plan", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_prints_the_goal():
    grpo = f"{CORPUS}/open-r1/recipes/Qwen2.5-1.5B-Instruct/grpo/config_demo.yaml"
    out = _plan("--config", grpo, "--gpu", "h100")
    assert "Goal   grpo: b = 16 completions (16 per prompt) of 1024 tokens" in out
    assert "generation: vLLM, not planned" in out
    dpo = _plan("-m", "Qwen2.5-0.5B", "--gpu", "24GiB", "--objective", "dpo")
    assert "full: dpo: 2 sequences per example (chosen + rejected); reference: a frozen copy" in dpo
    assert "LoRA: dpo: 2 sequences per example (chosen + rejected); reference: the policy with adapters" in dpo


@pytest.mark.parametrize("method, eval_batch", [("lora", 4), ("full", 8)])
def test_evaluation_phase_matches_trace(method, eval_batch):
    """An evaluation step after the optimizer step (``runtime.loop.evaluate``, the Trainer's
    ``prediction_step`` under no_grad): its loss spike at 4 x 256 tokens is (2 + 8) x 151,936 bytes
    per token for the bf16 logits, their fp32 copy and log_softmax, plus the 2 x 896-byte final
    hidden state: 1,557,659,648 bytes above the training state, above the b = 1 training step."""
    pytest.importorskip("peft")
    from lora_budget.trace.engine import trace

    spec = TrainSpec(model=truncated("Qwen2.5-0.5B", 2), method=method, seq_len=256, eval_batch_size=eval_batch)
    traced, planned = trace(spec).breakdown, estimate(spec)
    assert traced.phase == planned.phase == "evaluation"
    assert abs(planned.peak_bytes / traced.peak_bytes - 1) <= 0.001
    if eval_batch == 4:
        assert planned.logits + planned.temporaries == 1024 * (10 * 151_936 + 2 * 896)
