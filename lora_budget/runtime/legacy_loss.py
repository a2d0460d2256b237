"""transformers' causal-LM loss before 4.49, restated so the trace runs its allocations on the installed 5.x.

The installed transformers computes ``ForCausalLMLoss`` on the logits and labels padded by one ignored
position (transformers#35646). Earlier releases shift the logits instead; the steps below are those
of the Llama-family models and ``loss/loss_utils.py`` (Apache-2.0), in their order:

- 4.46 to 4.48 (4.48.1 ``loss/loss_utils.py`` lines 36-47): the model returns ``lm_head``'s output in its
  dtype; the loss takes ``logits = logits.float()``, ``shift_logits = logits[..., :-1, :].contiguous()``,
  ``shift_labels = labels[..., 1:].contiguous()`` and ``cross_entropy`` of their flat views.
- up to 4.45 (4.45.2 ``modeling_llama.py`` line 1214, 4.44.2 line 1209): the model upcasts first
  (``self.lm_head(hidden_states).float()``; its 16-bit output dies there), then the same shift and
  ``CrossEntropyLoss`` in the model's forward.

The decoder and the output head are the installed model's own modules, so everything before the logits
is the installed release's code; Gemma 2's final soft-capping is applied where its models apply it.
"""

from __future__ import annotations

from typing import Any

from lora_budget.spec import TrainSpec

UPCAST_IN_MODEL_UNTIL = (4, 46, 0)


def legacy_causal_lm_loss(model: Any, spec: TrainSpec, batch: Any) -> Any:
    """The mean next-token cross-entropy of ``batch`` (labels = inputs) as ``spec.transformers`` takes it."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    hidden = decoder(input_ids=batch).last_hidden_state
    if spec.transformers_version < UPCAST_IN_MODEL_UNTIL:
        logits = head(hidden).float()
    else:
        logits = head(hidden)
    del hidden
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    upcast = logits.float()
    shift_logits = upcast[..., :-1, :].contiguous()
    shift_labels = batch[..., 1:].contiguous()
    return F.cross_entropy(
        shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1), ignore_index=-100, reduction="mean"
    )
