"""Tiny configs of each supported architecture family, for tests that run real tensors on CPU."""

from lora_budget.catalog.shape import shape_from_config
from lora_budget.spec import ModelRef

_BASE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=160,
    vocab_size=256,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

TINY = {
    "llama": dict(model_type="llama", **_BASE),
    "qwen2": dict(model_type="qwen2", **_BASE),
    "qwen3": dict(model_type="qwen3", head_dim=16, **_BASE),
    "gemma2": dict(model_type="gemma2", head_dim=16, **{**_BASE, "tie_word_embeddings": True}),
    "phi3": dict(model_type="phi3", **{**_BASE, "num_key_value_heads": 4}),
    "olmo2": dict(model_type="olmo2", **_BASE),
    "gpt2": dict(
        model_type="gpt2",
        n_embd=64,
        n_layer=2,
        n_head=4,
        vocab_size=256,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    ),
}


def tiny_ref(arch: str) -> ModelRef:
    cfg = TINY[arch]
    return ModelRef(
        name=f"tiny-{arch}", hf_id="", source="tests/tiny_models.py", shape=shape_from_config(cfg), config=cfg
    )
