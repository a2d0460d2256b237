"""Normalise a Hugging Face ``config.json`` into the few numbers that decide memory.

Each supported ``model_type`` maps its own key names (``n_embd`` for GPT-2, ``num_kv_heads`` for
Falcon, ...) onto one :class:`ModelShape`. The architectural switches (gated MLP, fused qkv,
sandwich norms, qk-norm, MoE experts) are read from the transformers modelling code of that
model type, transformers 5.x, and are what the parameter and activation formulas branch on.
"""

from __future__ import annotations

from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field, replace

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any, Literal

    NormKind = Literal["rms", "rms_f32", "layer"]
    NormScheme = Literal["pre", "sandwich", "post"]
    QkNorm = Literal["none", "head", "full"]
    ActKind = Literal["silu", "gelu", "gelu_tanh", "gelu_new"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelShape:
    """The memory-relevant shape of a decoder-only transformer."""

    model_type: str
    """transformers ``model_type`` (llama, qwen2, gemma2, phi3, gpt2, falcon, ...)."""
    hidden: int
    """Residual stream width h."""
    layers: int
    """Number of decoder layers L."""
    heads: int
    """Query heads a."""
    kv_heads: int
    """Key/value heads k (k == a for MHA, 1 for MQA)."""
    head_dim: int
    """Per-head width d (need not equal h / a, e.g. Gemma)."""
    intermediate: int
    """MLP inner width i (per expert for MoE: ``moe_intermediate_size``)."""
    vocab: int
    """Vocabulary size V (rows of the embedding and of lm_head)."""
    max_positions: int
    """``max_position_embeddings``; longer sequences get a warning."""
    tied_embeddings: bool
    """lm_head shares the embedding matrix."""
    gated_mlp: bool
    """SwiGLU/GeGLU (gate, up, down) rather than plain (fc, proj)."""
    act: ActKind
    """MLP activation."""
    norm: NormKind
    """RMSNorm (weight), Gemma RMSNorm (1 + weight, computed in fp32), or LayerNorm (weight + bias)."""
    norm_scheme: NormScheme
    """pre: 2 norms per layer; sandwich: 4 (Gemma 2/3); post: 2 after the sublayers (OLMo 2)."""
    qk_norm: QkNorm
    """RMSNorm on queries/keys: per head (Qwen3, Gemma 3), over all heads (OLMo 2), or none."""
    qkv_bias: bool
    """Biases on the q/k/v projections (Qwen2, GPT-2)."""
    o_bias: bool
    """Bias on the attention output projection (GPT-2)."""
    mlp_bias: bool
    """Biases in the MLP (GPT-2)."""
    fused_qkv: bool
    """One qkv projection (Phi-3 ``qkv_proj``, GPT-2 ``c_attn``, Falcon ``query_key_value``)."""
    fused_gate_up: bool
    """One gate_up projection (Phi-3 ``gate_up_proj``)."""
    parallel_block: bool
    """Attention and MLP read the same normed input (Falcon ``parallel_attn``)."""
    learned_positions: int
    """Rows of a learned position embedding (GPT-2 ``wpe``); 0 with rotary embeddings."""
    experts: int
    """MoE experts per layer (0 for dense)."""
    experts_per_token: int
    """Experts each token is routed to (top-k)."""
    attn_softcap: bool
    """Attention logit soft-capping (Gemma 2): one more saved s x s tensor under eager attention."""
    final_softcap: bool
    """Final logit soft-capping (Gemma 2): one more saved vocab-sized tensor."""
    dropout: float
    """Residual/embedding/attention dropout probability used in training (GPT-2: 0.1)."""
    checkpoint_dtype: str
    """``torch_dtype`` recorded in the checkpoint (informational)."""
    sliding_window: int = 0
    """Local-attention window of the sliding layers (Gemma 3, Mistral v0.1), 0 without."""
    sliding_layers: int = 0
    """How many layers attend within ``sliding_window``."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the shape leaves out (a multimodal config's vision tower); plans carry these as warnings."""
    arch_config: str = field(default="", repr=False)
    """A non-analytical architecture's config (canonical JSON, depth left out): the planner reads its
    inventory and activation terms from trace-derived records keyed on it (``core/derived.py``)."""

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def derived(self) -> bool:
        """Planned from trace-derived records rather than the analytical walk."""
        return bool(self.arch_config)


SUPPORTED_TYPES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "gpt2",
    "falcon",
    "olmo2",
)


class _Reader:
    def __init__(self, raw: dict[str, Any], where: str):
        self.raw = raw
        self.where = where

    def need(self, *keys: str) -> Any:
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        names = " or ".join(repr(k) for k in keys)
        raise LoraBudgetError(f"{self.where}: config is missing the field {names}")

    def get(self, key: str, default: Any) -> Any:
        value = self.raw.get(key)
        return default if value is None else value


def _act(name: str, where: str) -> ActKind:
    table: dict[str, ActKind] = {
        "silu": "silu",
        "swish": "silu",
        "gelu": "gelu",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_new": "gelu_new",
    }
    if name not in table:
        raise LoraBudgetError(f"{where}: activation {name!r} is not supported (supported: {', '.join(table)})")
    return table[name]


def shape_from_config(raw: dict[str, Any], where: str = "config") -> ModelShape:
    """Build a :class:`ModelShape` from a config.json dict; errors name the missing field."""
    notes: tuple[str, ...] = ()
    if isinstance(raw.get("text_config"), dict) and "model_type" in raw["text_config"]:
        # Multimodal checkpoints (Gemma 3, Llama 4, Qwen2-VL, Mistral 3) nest the language model's config.
        outer = raw.get("model_type", "multimodal")
        raw = raw["text_config"]
        notes = (
            f"{outer} is multimodal: planned its text tower ({raw['model_type']}) only; "
            "the vision tower and image tokens are not counted",
        )
    check_config_values(raw, where)
    r = _Reader(raw, where)
    model_type = r.need("model_type")
    if model_type not in SUPPORTED_TYPES:
        from lora_budget.core.derived import derived_shape  # trace-derived records, torch-free

        shape = derived_shape(raw, where)
        return replace(shape, notes=notes + shape.notes) if notes else shape
    if model_type == "gpt2":
        shape = _gpt2(r)
    elif model_type == "falcon":
        shape = _falcon(r)
    else:
        shape = _llama_like(r, model_type)
    _check_shape(shape, where)
    return replace(shape, notes=notes) if notes else shape


_POSITIVE_INT_KEYS = (
    "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
    "num_hidden_layers", "vocab_size", "max_position_embeddings", "num_local_experts", "num_experts",
    "num_experts_per_tok", "moe_intermediate_size", "n_embd", "n_head", "n_layer", "n_inner",
    "n_positions", "n_embed", "ffn_hidden_size", "sliding_window", "sliding_window_pattern",
    "decoder_sparse_step",
)  # fmt: skip
"""config.json keys that must be positive integers when present (null means "not set"). 2**40
bounds them: no real width, count or vocabulary comes near, and the byte sums stay exact."""


def check_config_values(raw: dict[str, Any], where: str) -> None:
    """Refuse a config.json value no model has (``num_attention_heads: 0``, ``hidden_size: 1.5``
    or ``"abc"``, negative layers), naming the key, before any arithmetic on it."""
    if not isinstance(raw, dict):
        raise LoraBudgetError(f"{where}: a config must be a JSON object, got {type(raw).__name__}")
    for key in _POSITIVE_INT_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if type(value) is not int or not 0 < value < 2**40:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
            raise LoraBudgetError(f"{where}: {key} must be a positive integer, got {shown}")


def _check_shape(shape: ModelShape, where: str) -> None:
    """Relations between values: grouped-query attention shares each key/value head among
    ``heads / kv_heads`` query heads, so kv heads must divide heads; a token is routed to at most
    every expert."""
    if shape.heads % shape.kv_heads:
        raise LoraBudgetError(
            f"{where}: num_key_value_heads ({shape.kv_heads}) must divide num_attention_heads ({shape.heads})"
        )
    if shape.experts and shape.experts_per_token > shape.experts:
        raise LoraBudgetError(
            f"{where}: num_experts_per_tok ({shape.experts_per_token}) exceeds the number of experts ({shape.experts})"
        )
    for name, value in (("hidden_size", shape.hidden), ("head_dim", shape.head_dim), ("layers", shape.layers)):
        if value <= 0:
            raise LoraBudgetError(f"{where}: {name} works out to {value}; it must be positive")


def _llama_like(r: _Reader, model_type: str) -> ModelShape:
    hidden = int(r.need("hidden_size"))
    heads = int(r.need("num_attention_heads"))
    kv_heads = int(r.get("num_key_value_heads", heads))
    head_dim = int(r.get("head_dim", hidden // heads))
    gemma = model_type in ("gemma", "gemma2", "gemma3_text")
    experts = 0
    top_k = 0
    intermediate = int(r.need("intermediate_size"))
    if model_type == "mixtral":
        experts = int(r.need("num_local_experts"))
        top_k = int(r.need("num_experts_per_tok"))
    elif model_type == "qwen3_moe":
        experts = int(r.need("num_experts"))
        top_k = int(r.need("num_experts_per_tok"))
        intermediate = int(r.need("moe_intermediate_size"))
        if r.get("mlp_only_layers", []) or int(r.get("decoder_sparse_step", 1)) != 1:
            raise LoraBudgetError(f"{r.where}: qwen3_moe with dense layers mixed in is not supported yet")
    if gemma:
        act = _act(str(r.get("hidden_activation", r.get("hidden_act", "gelu_pytorch_tanh"))), r.where)
    else:
        act = _act(str(r.get("hidden_act", "silu")), r.where)
    attention_bias = bool(r.get("attention_bias", False))
    qkv_bias = model_type == "qwen2" or attention_bias
    return ModelShape(
        model_type=model_type,
        hidden=hidden,
        layers=int(r.need("num_hidden_layers")),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=int(r.need("vocab_size")),
        max_positions=int(r.get("max_position_embeddings", 2048)),
        tied_embeddings=bool(r.get("tie_word_embeddings", gemma)),
        gated_mlp=True,
        act=act,
        # Gemma's (1 + weight) and OLMo 2's weight multiply the normalized fp32 tensor before the
        # cast back (Llama-style norms cast first): a trained weight keeps the fp32 product
        norm="rms_f32" if gemma or model_type == "olmo2" else "rms",
        norm_scheme="sandwich"
        if model_type in ("gemma2", "gemma3_text")
        else ("post" if model_type == "olmo2" else "pre"),
        qk_norm="head"
        if model_type in ("qwen3", "qwen3_moe", "gemma3_text")
        else ("full" if model_type == "olmo2" else "none"),
        qkv_bias=qkv_bias,
        o_bias=attention_bias and model_type != "qwen2",
        mlp_bias=bool(r.get("mlp_bias", False)),
        fused_qkv=model_type == "phi3",
        fused_gate_up=model_type == "phi3",
        parallel_block=False,
        learned_positions=0,
        experts=experts,
        experts_per_token=top_k,
        attn_softcap=r.get("attn_logit_softcapping", None) is not None and model_type == "gemma2",
        final_softcap=r.get("final_logit_softcapping", None) is not None,
        dropout=float(r.get("resid_pdrop", 0.0)) if model_type == "phi3" else 0.0,
        checkpoint_dtype=str(r.get("torch_dtype", r.get("dtype", "unknown"))),
        **_sliding(r, model_type, int(r.need("num_hidden_layers"))),
    )


def _sliding(r: _Reader, model_type: str, layers: int) -> dict[str, int]:
    """Which layers use local attention, as the transformers 5 config classes decide it.

    Gemma 3: ``layer_types`` if given, else every layer but each ``sliding_window_pattern``-th
    (default 6). Mistral: every layer when ``sliding_window`` is set. Gemma 2 runs eager attention,
    whose mask the planner counts anyway; Qwen2's ``use_sliding_window`` is off in every catalog
    config and not modelled.
    """
    window = r.get("sliding_window", None)
    if not window:
        return {}
    if model_type == "gemma3_text":
        types = r.get("layer_types", None)
        if types:
            count = sum(1 for t in types if t == "sliding_attention")
        else:
            pattern = int(r.get("sliding_window_pattern", 6))
            count = sum(1 for i in range(layers) if (i + 1) % pattern)
        return {"sliding_window": int(window), "sliding_layers": count}
    if model_type == "mistral":
        return {"sliding_window": int(window), "sliding_layers": layers}
    return {}


def _gpt2(r: _Reader) -> ModelShape:
    hidden = int(r.need("n_embd", "hidden_size"))
    heads = int(r.need("n_head", "num_attention_heads"))
    inner = r.get("n_inner", None)
    return ModelShape(
        model_type="gpt2",
        hidden=hidden,
        layers=int(r.need("n_layer", "num_hidden_layers")),
        heads=heads,
        kv_heads=heads,
        head_dim=hidden // heads,
        intermediate=int(inner) if inner else 4 * hidden,
        vocab=int(r.need("vocab_size")),
        max_positions=int(r.need("n_positions", "max_position_embeddings")),
        tied_embeddings=bool(r.get("tie_word_embeddings", True)),
        gated_mlp=False,
        act=_act(str(r.get("activation_function", "gelu_new")), r.where),
        norm="layer",
        norm_scheme="pre",
        qk_norm="none",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        fused_qkv=True,
        fused_gate_up=False,
        parallel_block=False,
        learned_positions=int(r.need("n_positions", "max_position_embeddings")),
        experts=0,
        experts_per_token=0,
        attn_softcap=False,
        final_softcap=False,
        dropout=float(r.get("resid_pdrop", 0.1)),
        checkpoint_dtype=str(r.get("torch_dtype", r.get("dtype", "unknown"))),
    )


def _falcon(r: _Reader) -> ModelShape:
    hidden = int(r.need("hidden_size", "n_embed"))
    heads = int(r.need("num_attention_heads", "n_head"))
    new_arch = bool(r.get("new_decoder_architecture", False))
    if new_arch or r.get("alibi", False):
        raise LoraBudgetError(f"{r.where}: Falcon with new_decoder_architecture or alibi is not supported yet")
    multi_query = bool(r.get("multi_query", True))
    kv_heads = 1 if multi_query else heads
    if not r.get("parallel_attn", True):
        raise LoraBudgetError(f"{r.where}: Falcon without parallel_attn is not supported yet")
    bias = bool(r.get("bias", False))
    return ModelShape(
        model_type="falcon",
        hidden=hidden,
        layers=int(r.need("num_hidden_layers", "n_layer")),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=hidden // heads,
        intermediate=int(r.get("ffn_hidden_size", 4 * hidden)),
        vocab=int(r.need("vocab_size")),
        max_positions=int(r.get("max_position_embeddings", 2048)),
        tied_embeddings=bool(r.get("tie_word_embeddings", True)),
        gated_mlp=False,
        act="gelu",
        norm="layer",
        norm_scheme="pre",
        qk_norm="none",
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        fused_qkv=True,
        fused_gate_up=False,
        parallel_block=True,
        learned_positions=0,
        experts=0,
        experts_per_token=0,
        attn_softcap=False,
        final_softcap=False,
        dropout=float(r.get("hidden_dropout", 0.0)),
        checkpoint_dtype=str(r.get("torch_dtype", r.get("dtype", "unknown"))),
    )
