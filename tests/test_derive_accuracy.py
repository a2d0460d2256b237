"""Plan from trace-derived coefficients against the full trace, for architectures the walk does not know.

The coefficients come from a 2-layer copy of each model (for layers of several types, the fewest
leading layers that hold every type, ``test_layers_of_several_types``); the trace they are checked against runs
the model at real width and 6 layers (or its full depth for the small ones), for LoRA and full
fine-tuning with and without gradient checkpointing, plus eager attention at 2,048 tokens, where
the s x s backward working set of a layer (not the logits) makes the peak. The issue's bound is 1 %.
Configs: the catalog's own (models_derived.json) where it has the architecture, else the model's
config.json values as listed below (source URL beside each). All slow (minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses

import pytest

from lora_budget.catalog.models import resolve_model
from lora_budget.catalog.shape import shape_from_config
from lora_budget.core import derived
from lora_budget.core.model import estimate, peak_model
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import ModelRef, TrainSpec

PLAIN = "plain"
"""The reference loop (no autocast): what the shipped records and these checks are of; stated, not
taken from the framework default."""

pytest.importorskip("peft")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

CONFIGS = {
    # https://huggingface.co/microsoft/phi-2/blob/main/config.json
    "phi-2": {
        "model_type": "phi", "vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "resid_pdrop": 0.1,
        "embd_pdrop": 0.0, "attention_dropout": 0.0, "hidden_act": "gelu_new", "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-05, "tie_word_embeddings": False, "rope_theta": 10000.0,
        "partial_rotary_factor": 0.4, "qk_layernorm": False,
    },
    # https://huggingface.co/EleutherAI/pythia-1.4b/blob/main/config.json
    "pythia-1.4b": {
        "model_type": "gpt_neox", "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 16,
        "num_hidden_layers": 24, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "use_parallel_residual": True, "vocab_size": 50304, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
        "tie_word_embeddings": False,
    },
    # https://huggingface.co/EleutherAI/pythia-160m/blob/main/config.json
    "pythia-160m": {
        "model_type": "gpt_neox", "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
        "num_hidden_layers": 12, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "use_parallel_residual": True, "vocab_size": 50304, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
        "tie_word_embeddings": False,
    },
    # https://huggingface.co/ibm-granite/granite-3.0-2b-base/blob/main/config.json
    "granite-3.0-2b": {
        "model_type": "granite", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 40,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 49155, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
        "embedding_multiplier": 12.0, "logits_scaling": 8.0, "residual_multiplier": 0.22,
        "attention_multiplier": 0.015625, "attention_dropout": 0.1, "hidden_act": "silu", "tie_word_embeddings": True,
    },
    # https://huggingface.co/allenai/OLMo-1B-hf/blob/main/config.json
    "OLMo-1B-hf": {
        "model_type": "olmo", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 50304, "max_position_embeddings": 2048,
        "hidden_act": "silu", "attention_bias": False, "clip_qkv": None, "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
    # https://huggingface.co/adept/persimmon-8b-base/blob/main/config.json
    "persimmon-8b": {
        "model_type": "persimmon", "hidden_size": 4096, "intermediate_size": 16384, "num_hidden_layers": 36,
        "num_attention_heads": 64, "vocab_size": 262144, "max_position_embeddings": 16384, "hidden_act": "relu2",
        "layer_norm_eps": 1e-05, "qk_layernorm": True, "partial_rotary_factor": 0.5, "rope_theta": 25000.0,
        "tie_word_embeddings": False, "hidden_dropout": 0.0, "attention_dropout": 0.0,
    },
}  # fmt: skip
CATALOG = ("GPT-J-6B", "StableLM-2-Zephyr-1.6B", "Aya-23-8B", "StarCoder2-7B", "SantaCoder", "Qwen3-VL-2B")
"""Trace-derived catalog entries (gptj, stablelm, cohere, starcoder2, gpt_bigcode, and the text tower of
qwen3_vl, which transformers builds only inside its multimodal model: runtime/text_tower.py)."""

STEPS = [(m, c) for m in ("lora", "full") for c in (False, True)]


def config(name: str) -> dict:
    return dict(CONFIGS[name]) if name in CONFIGS else dict(resolve_model(name).config)


def model(name: str, layers: int | None) -> ModelRef:
    from lora_budget.derive import truncated_config

    raw = truncated_config(config(name), layers) if layers else config(name)
    label = f"{name} ({layers} layers)" if layers else name
    return ModelRef(name=label, hf_id="", source="test", shape=shape_from_config(raw, where=name), config=raw)


def error(spec: TrainSpec) -> float:
    from lora_budget.trace.engine import trace

    return estimate(spec).peak_bytes / trace(spec).breakdown.peak_bytes - 1


@pytest.fixture(scope="module", autouse=True)
def cache(coefficient_cache):
    return coefficient_cache


@pytest.mark.parametrize("batch, seq", [(2, 512), (1, 2048)])
@pytest.mark.parametrize("method, ckpt", STEPS)
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "pythia-160m"] + list(CATALOG))
def test_six_layers(name, method, ckpt, batch, seq):
    """b = 2 is inside the fitted points' batch range; b = 1 relies on the single-sequence probes."""
    spec = TrainSpec(
        framework=PLAIN, model=model(name, 6), method=method, grad_ckpt=ckpt, batch_size=batch, seq_len=seq
    )
    assert spec.model.shape.derived
    assert abs(error(spec)) <= 0.01


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("name", ["phi-2", "granite-3.0-2b", "SantaCoder"])
def test_qlora(name, ckpt):
    spec = TrainSpec(framework=PLAIN, model=model(name, 6), method="qlora", grad_ckpt=ckpt, batch_size=1, seq_len=2048)
    assert abs(error(spec)) <= 0.01


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("name", ["phi-2", "pythia-1.4b", "granite-3.0-2b", "StarCoder2-7B"])
def test_eager_attention_long_sequence(name, method):
    """Eager attention at b = 1, s = 2,048: a layer's backward keeps s x s fp32 gradients per head."""
    spec = TrainSpec(framework=PLAIN, model=model(name, 6), method=method, attn="eager", batch_size=1, seq_len=2048)
    assert abs(error(spec)) <= 0.01


@pytest.mark.parametrize("method, ckpt", STEPS)
@pytest.mark.parametrize("name", ["pythia-160m", "SantaCoder"])
def test_full_depth(name, method, ckpt):
    spec = TrainSpec(
        framework=PLAIN, model=model(name, None), method=method, grad_ckpt=ckpt, batch_size=1, seq_len=2048
    )
    assert abs(error(spec)) <= 0.01


@pytest.mark.parametrize("method, ckpt", STEPS)
@pytest.mark.parametrize("name", ["Qwen2.5-0.5B", "Llama-3.2-1B"])
def test_hand_modelled_families_reproduce_the_walk(name, method, ckpt):
    """Derived coefficients for two hand-modelled families: the per-layer saved bytes equal the walk's
    (without checkpointing, where the walk keeps them; with it, the kept layer input). ``once`` is
    8 bytes per token more, the int64 labels nll_loss keeps for backward, and under checkpointing 8
    more, the int64 position ids each checkpointed layer keeps as an argument (one per position,
    folded per token); the walk leaves both out. The peak agrees."""
    ref = resolve_model(name)
    from lora_budget.derive import truncated_config

    raw = truncated_config(dict(ref.config), 6)
    analytical = dataclasses.replace(ref, shape=shape_from_config(raw), config=raw)
    traced = dataclasses.replace(analytical, shape=derived.derived_shape(raw, name))
    a = peak_model(
        TrainSpec(framework=PLAIN, model=analytical, method=method, grad_ckpt=ckpt, batch_size=2, seq_len=512)
    )
    d = peak_model(TrainSpec(framework=PLAIN, model=traced, method=method, grad_ckpt=ckpt, batch_size=2, seq_len=512))
    if ckpt:
        assert d.acts.checkpoint == a.acts.checkpoint
    else:
        assert (d.acts.layer, d.acts.first_layer) == (a.acts.layer, a.acts.first_layer)
    assert d.acts.once.lin - a.acts.once.lin == (16 if ckpt else 8)
    assert d.peak_bytes(2, 512) == pytest.approx(a.peak_bytes(2, 512), rel=2e-4)


NEMOTRON_TARGETS = "in_proj,q_proj,k_proj,v_proj,o_proj,up_proj,down_proj"
"""Nemotron-H's linears less the Mamba mixer's out_proj, which peft refuses to adapt on Mamba models
(its ``all-linear`` list would hold it)."""

SEVERAL_TYPES = {
    # catalog entry: (layers traced, attention, LoRA targets, sizes (b, s)); a reduced depth where the
    # full one is too slow to trace at five sizes on 2 cores, always deeper than the copy derived from
    "LFM2-350M": (16, "sdpa", "all-linear", [(2, 512), (1, 2048)]),  # its full depth; copy: 3 layers
    "Qwen3.5-27B": (8, "sdpa", "all-linear", [(2, 512), (1, 2048)]),  # 2 x (3 linear + 1 full); copy 4
    # 2 x (5 sliding + 1 full); copy 6; sizes from the 1,024-token window on (the points' range)
    "Gemma-4-31B": (12, "sdpa", "all-linear", [(2, 1024), (1, 2048)]),
    "gpt-oss-20b": (6, "eager", "all-linear", [(2, 512), (1, 2048)]),  # MoE, sliding / full; copy 3
    "Nemotron-H-56B": (20, "sdpa", NEMOTRON_TARGETS, [(2, 512), (1, 2048)]),  # Mamba / MLP / attention; copy 8
}
"""Architectures whose decoder layers are of several types (models_derived.json configs)."""

MOE = {
    # one layer type, MoE experts traced as transformers runs them (grouped_mm); shared_expert_gate is an
    # h -> 1 linear the planner's all-linear would adapt at rank 16 > 1, so attention targets
    "Qwen1.5-MoE-A2.7B": (6, "sdpa", "attn", [(2, 512), (1, 2048)]),
    "DeepSeek-V2-Lite": (6, "sdpa", "attn", [(2, 512), (1, 2048)]),  # first layer dense, then MoE; copy 2
}


MISSES = {
    # (name, b, s, method, ckpt): the measured error, by the last run of this test (2 cores, 17:40 UTC)
    ("gpt-oss-20b", 1, 2048, "full", True): "-1.12 %: the plan misses a backward moment past the fitted sizes",
    ("DeepSeek-V2-Lite", 1, 2048, "full", False): "-1.69 %: its dense type exists only at layer 0",
    **{
        ("Nemotron-H-56B", 1, 2048, m, c): "-2.5 % to -3.9 %: a Mamba layer's bytes are not C + a s + T (lin + "
        "quad s) (the fifth point misses by 32 MiB), so they do not extrapolate past s = 768"
        for m, c in STEPS
    },
}
"""Cases outside 1 %, kept as strict expected failures with their measured error (the issue's bound
holds for the others)."""


def _cases() -> list:
    out = []
    for table in (SEVERAL_TYPES, MOE):
        for name, (layers, attn, targets, sizes) in table.items():
            for b, s in sizes:
                for method, ckpt in STEPS:
                    miss = MISSES.get((name, b, s, method, ckpt))
                    marks = [pytest.mark.xfail(strict=True, reason=miss)] if miss else []
                    out.append(pytest.param(name, layers, attn, targets, b, s, method, ckpt, marks=marks))
    return out


@pytest.mark.parametrize("name, layers, attn, targets, batch, seq, method, ckpt", _cases())
def test_layers_of_several_types(name, layers, attn, targets, batch, seq, method, ckpt, record_property):
    """The error is recorded (``--junitxml`` keeps it) for the accuracy table; ``MISSES`` are the
    cases measured outside 1 %."""
    spec = TrainSpec(
        framework=PLAIN, model=model(name, layers), method=method, grad_ckpt=ckpt, batch_size=batch, seq_len=seq,
        attn=attn, targets=targets,
    )  # fmt: skip
    if name == "Gemma-4-31B" and ckpt:
        # under checkpointing the copy's last sliding and full layers keep their k and v for the
        # KV-sharing dict (layers 4 and 5 of the 6-layer copy, 58 and 59 of the model): the check
        # that same-type layers keep the same bytes refuses, rather than plan a wrong line
        with pytest.raises(LoraBudgetError, match="are of one type but keep different bytes"):
            estimate(spec)
        return
    err = error(spec)
    record_property("plan_vs_trace", f"{err:+.4%}")
    assert abs(err) <= 0.01, f"{err:+.3%}"
