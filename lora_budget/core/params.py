"""Parameter inventory: every weight tensor a transformers model of a given shape instantiates.

The inventory is derived from the transformers 5.x modelling code of each ``model_type``
(``modeling_llama.py``, ``modeling_gpt2.py``, ...): one :class:`ParamTensor` per distinct tensor
shape, with how many copies the model holds. Its total equals ``sum(p.numel() for p in
model.parameters())`` of the instantiated model (tied embeddings counted once), which
``tests/test_param_counts_torch.py`` checks against transformers on the meta device for every
catalog entry.

Roles decide what each method does with a tensor:

- ``linear``: weight of an ``nn.Linear`` / GPT-2 ``Conv1D`` inside a decoder layer. Quantized by
  QLoRA / 8-bit LoRA, a LoRA target candidate.
- ``linear_bias``: its bias (never quantized; ``prepare_model_for_kbit_training`` upcasts it).
- ``embedding``, ``lm_head``, ``norm``, ``experts`` (3-D MoE expert tensors, which transformers 5
  stores as ``nn.Parameter`` and bitsandbytes therefore leaves unquantized), ``router``.
"""

from __future__ import annotations

from functools import lru_cache

from lora_budget.catalog.shape import ModelShape
from lora_budget.records import dataclass

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Literal

    Role = Literal["linear", "linear_bias", "embedding", "lm_head", "norm", "experts", "router"]
    Group = Literal["attn", "mlp", "other"]


@dataclass(frozen=True, slots=True)
class ParamTensor:
    name: str
    """Module name as peft sees it (last path component), e.g. ``q_proj``; ``.bias`` for biases."""
    shape: tuple[int, ...]
    count: int
    """How many tensors of this shape the model holds (layers x copies)."""
    role: Role
    group: Group = "other"
    in_features: int = 0
    """For ``linear``: the input width (LoRA A is rank x in_features)."""
    out_features: int = 0
    """For ``linear``: the output width (LoRA B is out_features x rank)."""

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def total_numel(self) -> int:
        return self.numel * self.count


def _linear(name: str, fan_in: int, fan_out: int, count: int, group: Group, bias: bool) -> list[ParamTensor]:
    out = [ParamTensor(name, (fan_out, fan_in), count, "linear", group, fan_in, fan_out)]
    if bias:
        out.append(ParamTensor(name + ".bias", (fan_out,), count, "linear_bias", group))
    return out


@lru_cache(maxsize=256)
def inventory(shape: ModelShape) -> tuple[ParamTensor, ...]:
    """All parameter tensors of the model, grouped by shape (cached: a shape is frozen and hashable,
    and the planner asks for the same model's inventory dozens of times per plan)."""
    if shape.derived:  # an architecture outside the walk: its measured inventory (core/derived.py)
        from lora_budget.core.derived import inventory as derived_inventory

        return derived_inventory(shape)
    s = shape
    L = s.layers
    h = s.hidden
    tensors: list[ParamTensor] = [ParamTensor("embed_tokens", (s.vocab, h), 1, "embedding")]
    if s.learned_positions:
        tensors.append(ParamTensor("wpe", (s.learned_positions, h), 1, "embedding"))

    # Norms: LayerNorm has weight and bias, RMSNorm a weight only.
    norms_per_layer = {"pre": 2, "sandwich": 4, "post": 2}[s.norm_scheme]
    if s.parallel_block:
        norms_per_layer = 1  # Falcon-7B: one input_layernorm feeds attention and MLP
    norm_tensors = 2 if s.norm == "layer" else 1
    tensors.append(ParamTensor("layernorm", (h,), L * norms_per_layer * norm_tensors, "norm"))
    if s.qk_norm == "head":
        tensors.append(ParamTensor("q_norm", (s.head_dim,), L, "norm"))
        tensors.append(ParamTensor("k_norm", (s.head_dim,), L, "norm"))
    elif s.qk_norm == "full":
        tensors.append(ParamTensor("q_norm", (s.q_width,), L, "norm"))
        tensors.append(ParamTensor("k_norm", (s.kv_width,), L, "norm"))

    # Attention projections.
    names = module_names(s)
    if s.fused_qkv:
        tensors += _linear(names["qkv"], h, s.q_width + 2 * s.kv_width, L, "attn", s.qkv_bias)
    else:
        tensors += _linear(names["q"], h, s.q_width, L, "attn", s.qkv_bias)
        tensors += _linear(names["k"], h, s.kv_width, L, "attn", s.qkv_bias)
        tensors += _linear(names["v"], h, s.kv_width, L, "attn", s.qkv_bias)
    tensors += _linear(names["o"], s.q_width, h, L, "attn", s.o_bias)

    # MLP or experts.
    i = s.intermediate
    if s.is_moe:
        tensors.append(ParamTensor("router", (s.experts, h), L, "router", "mlp"))
        tensors.append(ParamTensor("experts.gate_up_proj", (s.experts, 2 * i, h), L, "experts", "mlp"))
        tensors.append(ParamTensor("experts.down_proj", (s.experts, h, i), L, "experts", "mlp"))
    elif s.gated_mlp and s.fused_gate_up:
        tensors += _linear(names["gate_up"], h, 2 * i, L, "mlp", s.mlp_bias)
        tensors += _linear(names["down"], i, h, L, "mlp", s.mlp_bias)
    elif s.gated_mlp:
        tensors += _linear(names["gate"], h, i, L, "mlp", s.mlp_bias)
        tensors += _linear(names["up"], h, i, L, "mlp", s.mlp_bias)
        tensors += _linear(names["down"], i, h, L, "mlp", s.mlp_bias)
    else:
        tensors += _linear(names["fc"], h, i, L, "mlp", s.mlp_bias)
        tensors += _linear(names["proj"], i, h, L, "mlp", s.mlp_bias)

    tensors.append(ParamTensor("final_norm", (h,), 2 if s.norm == "layer" else 1, "norm"))
    if not s.tied_embeddings:
        tensors.append(ParamTensor("lm_head", (s.vocab, h), 1, "lm_head"))
    return tuple(tensors)


def module_names(s: ModelShape) -> dict[str, str]:
    """peft-visible module names per architecture (the last component of each module path)."""
    if s.model_type == "gpt2":
        return {"qkv": "c_attn", "o": "c_proj", "fc": "c_fc", "proj": "c_proj"}
    if s.model_type == "falcon":
        return {"qkv": "query_key_value", "o": "dense", "fc": "dense_h_to_4h", "proj": "dense_4h_to_h"}
    return {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "qkv": "qkv_proj",
        "o": "o_proj",
        "gate": "gate_proj",
        "up": "up_proj",
        "gate_up": "gate_up_proj",
        "down": "down_proj",
    }


@lru_cache(maxsize=256)
def linear_names(shape: ModelShape) -> tuple[str, ...]:
    """Names of the decoder-layer linear modules, in model order, without duplicates."""
    seen: dict[str, None] = {}
    for t in inventory(shape):
        if t.role == "linear":
            seen[t.name] = None
    return tuple(seen)


@lru_cache(maxsize=256)
def param_count(shape: ModelShape) -> int:
    """Exact number of parameters transformers instantiates (tied weights counted once)."""
    return sum(t.total_numel for t in inventory(shape))
