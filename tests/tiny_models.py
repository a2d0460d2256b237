"""Tiny configs of each supported architecture family, for tests that run real tensors on CPU."""

from lora_budget.catalog.shape import shape_from_config
from lora_budget.spec import ModelRef


def tiny_config(arch: str, layers: int = 2) -> dict:
    """A config.json of ``arch`` at width 64, vocabulary 256 and ``layers`` decoder layers."""
    if arch == "gpt2":
        return dict(
            model_type="gpt2",
            n_embd=64,
            n_layer=layers,
            n_head=4,
            vocab_size=256,
            n_positions=128,
            bos_token_id=1,
            eos_token_id=2,
        )
    base = dict(
        hidden_size=64,
        num_hidden_layers=layers,
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
    extra = {
        "qwen3": {"head_dim": 16},
        "gemma2": {"head_dim": 16, "tie_word_embeddings": True},
        "phi3": {"num_key_value_heads": 4},
    }.get(arch, {})
    return {"model_type": arch, **base, **extra}


TINY = {arch: tiny_config(arch) for arch in ("llama", "qwen2", "qwen3", "gemma2", "phi3", "olmo2", "gpt2")}


def tiny_ref(arch: str) -> ModelRef:
    cfg = TINY[arch]
    return ModelRef(
        name=f"tiny-{arch}", hf_id="", source="tests/tiny_models.py", shape=shape_from_config(cfg), config=cfg
    )


def truncated(name: str, layers: int) -> ModelRef:
    """A catalog model cut to ``layers`` decoder layers at its real width and vocabulary (per-layer
    terms are exact per layer, so a few layers test them at a fraction of a full trace's cost)."""
    import dataclasses

    from lora_budget.catalog.models import resolve_model

    ref = resolve_model(name)
    config = {**ref.config, "num_hidden_layers": layers}
    return dataclasses.replace(
        ref, name=f"{ref.name} ({layers} layers)", shape=shape_from_config(config), config=config
    )
