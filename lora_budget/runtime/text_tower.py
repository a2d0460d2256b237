"""The causal LM of a multimodal model's text tower, for text-only training steps.

transformers builds some language models only inside a multimodal wrapper: Qwen2-VL, Qwen2.5-VL,
Qwen3-VL (and its MoE), GLM-4V, SmolVLM and others have a text model class (``Qwen3VLTextModel``) but
no ``AutoModelForCausalLM`` entry. On a text-only batch their ``...ForConditionalGeneration.forward``
(transformers 5.24, e.g. ``models/qwen3_vl/modeling_qwen3_vl.py``) embeds the tokens, runs the text
model, applies ``lm_head`` to the hidden states and calls ``self.loss_function(logits, labels,
vocab_size)``: the vision tower is not run, and the only other tensor is the (3, b, s) int64 rotary
position index, a few KB.

``TextTowerLM`` is that step without the vision tower: the text model, the output head (tied to the
input embedding where the text config ties them) and the library's causal-LM loss. Its activations,
logits and loss are the multimodal model's on text-only input; what it leaves out is the vision
tower's weights (and their gradients and optimizer state in full fine-tuning), which the planner
says it does not count (``catalog.shape``: "the vision tower and image tokens are not counted").
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lora_budget.errors import LoraBudgetError


def causal_lm_from_config(transformers: Any, config: Any, dtype: Any) -> Any:
    """``AutoModelForCausalLM.from_config(config)``; where transformers has no causal LM for the
    config but builds its text tower, the ``TextTowerLM`` of that tower (``config``'s text config)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    text = config.get_text_config()
    if type(text) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return transformers.AutoModelForCausalLM.from_config(text, dtype=dtype)
    own = _own_causal_lm(text)
    if own is not None:  # a causal LM the auto classes do not map (MllamaForCausalLM for mllama_text_model)
        return own._from_config(text, dtype=dtype)
    try:
        tower = MODEL_MAPPING[type(text)]
    except KeyError:
        raise LoraBudgetError(f"transformers has no causal LM and no text model for {config.model_type!r}") from None
    text._attn_implementation = config._attn_implementation
    text.use_cache = False
    return text_tower_class(tower)._from_config(text, dtype=dtype)


def _own_causal_lm(text: Any) -> type | None:
    """The ``...ForCausalLM`` class the text config's own modelling module defines for it, if any."""
    import importlib

    package = type(text).__module__.rsplit(".", 1)[0]  # transformers.models.<type>
    try:
        module = importlib.import_module(f"{package}.modeling_{package.rsplit('.', 1)[1]}")
    except ImportError:
        return None
    for name in dir(module):
        cls = getattr(module, name)
        if name.endswith("ForCausalLM") and isinstance(cls, type) and getattr(cls, "config_class", None) is type(text):
            return cls
    return None


@cache
def text_tower_class(tower: type) -> type:
    """The causal-LM class around the text model class ``tower`` (one per tower class)."""
    import torch
    from transformers import GenerationMixin
    from transformers.modeling_outputs import CausalLMOutputWithPast

    base = next(c for c in tower.__mro__[1:] if c.__name__.endswith("PreTrainedModel"))

    class TextTowerLM(base, GenerationMixin):  # type: ignore[misc, valid-type]  (peft reads its generation hooks)
        base_model_prefix = "model"
        _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
        config_class = tower.config_class
        accepts_loss_kwargs = False

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = tower(config)
            self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.post_init()

        def get_output_embeddings(self) -> Any:
            return self.lm_head

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,  # noqa: ANN001
                    labels=None, **kwargs: Any) -> Any:  # fmt: skip
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
            logits = self.lm_head(out[0])
            loss = None
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            return CausalLMOutputWithPast(loss=loss, logits=logits)

    TextTowerLM.__name__ = TextTowerLM.__qualname__ = f"{tower.__name__.removesuffix('Model')}ForCausalLM"
    return TextTowerLM
