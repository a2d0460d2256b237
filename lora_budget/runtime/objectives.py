"""The losses of preference, RL and reward training, as TRL v1.9.0 computes them, on our model.

Each function is one micro-batch of TRL's trainer step, reduced to what decides memory; the ops,
their order and which tensors stay referenced follow the trainer's source (cited per function).
The per-token log-probabilities come from TRL's own ``selective_log_softmax`` (imported from
``trl.trainer.utils``), so the one kernel whose memory differs from transformers' loss is the
library's code, not a copy.

The batch has ``sequences_per_example * batch_size`` rows: for pairs, the chosen sequences first
and the rejected ones after them, as TRL's preference collator stacks them. Prompt masking
(``completion_mask``) multiplies a b x s tensor of log-probabilities: a few bytes per token, kept
as a multiplication by ones (a boolean-index assignment would stop a fake-tensor trace).
"""

from __future__ import annotations

from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec

BETA = 0.1
"""TRL's ``DPOConfig.beta`` default; the value does not change memory."""


def _selective_log_softmax() -> Any:
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:
        raise LoraBudgetError(
            "tracing a dpo/ipo/orpo/simpo/grpo step runs TRL's selective_log_softmax: pip install 'trl>=1.9'; "
            "`lora-budget plan` answers without it"
        ) from None
    return selective_log_softmax


def objective_loss(model: Any, spec: TrainSpec, batch: Any, reference: Any = None) -> Any:
    """The loss of one micro-batch of ``spec.objective`` (anything but sft)."""
    if spec.objective == "reward":
        return _reward(model, batch)
    if spec.objective == "grpo":
        return _grpo(model, spec, batch)
    return _preference(model, spec, batch, reference)


def _preference(model: Any, spec: TrainSpec, batch: Any, reference: Any) -> Any:
    """``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py, v1.9.0).

    One forward of chosen + rejected; ``outputs`` stays referenced until the loss is returned, so
    the policy's logits are alive through the reference forward. The reference runs under
    ``no_grad``: the same model with its adapters disabled (``use_adapter(model, None)`` with
    PEFT), or a separate frozen model (full fine-tuning). ORPO and SimPO take no reference.
    """
    import torch
    import torch.nn.functional as F

    selective_log_softmax = _selective_log_softmax()
    outputs = model(input_ids=batch, use_cache=False)
    shift_labels = batch[..., 1:]
    mask = torch.ones_like(shift_labels)  # completion_mask[..., 1:]
    per_token_logps = selective_log_softmax(outputs.logits[..., :-1, :], shift_labels) * mask
    chosen, rejected = per_token_logps.sum(dim=1).chunk(2, dim=0)
    kind = spec.reference_kind
    if kind in ("adapter", "copy"):
        with torch.no_grad():
            if kind == "adapter":
                with model.disable_adapter():
                    ref_outputs = model(input_ids=batch, use_cache=False)
            else:
                ref_outputs = reference(input_ids=batch, use_cache=False)
            ref = selective_log_softmax(ref_outputs.logits[..., :-1, :], shift_labels) * mask
            ref_chosen, ref_rejected = ref.sum(dim=1).chunk(2, dim=0)
    else:  # precomputed log-probs come with the batch; orpo / simpo have none
        ref_chosen, ref_rejected = torch.zeros_like(chosen), torch.zeros_like(rejected)
    logits = BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))
    loss = -F.logsigmoid(logits).mean()
    del outputs
    return loss


def _grpo(model: Any, spec: TrainSpec, batch: Any) -> Any:
    """``GRPOTrainer._compute_loss`` with ``_get_per_token_logps_and_entropies`` (trl/trainer/
    grpo_trainer.py, v1.9.0), one iteration per generation (``num_iterations`` = 1).

    The model returns logits for the last ``completion + 1`` positions only (``logits_to_keep``);
    the last is dropped, the rest divided in place by the temperature and turned into per-token
    log-probabilities; the entropies are computed under ``no_grad`` (no entropy bonus) with TRL's
    ``entropy_from_logits``. The old log-probabilities are the detached new ones; advantages are
    per-sequence scalars. The reference log-probabilities (beta > 0) are computed before this
    step, in ``_generate_and_score_completions``, and arrive as a b x completion tensor.
    """
    import torch
    from trl.trainer.utils import entropy_from_logits

    selective_log_softmax = _selective_log_softmax()
    keep = spec.completion_tokens
    outputs = model(input_ids=batch, logits_to_keep=keep + 1, use_cache=False)
    logits = outputs.logits[:, :-1, :][:, -keep:, :]
    logits.div_(1.0)
    completion_ids = batch[:, -keep:]
    logps = selective_log_softmax(logits, completion_ids)
    with torch.no_grad():
        entropies = entropy_from_logits(logits)
    del outputs, logits
    advantages = torch.ones(batch.size(0), 1, dtype=logps.dtype, device=logps.device)
    ratio = torch.exp(logps - logps.detach())
    clipped = torch.clamp(ratio, 1 - 0.2, 1 + 0.2)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if spec.reference_kind != "none":
        ref = torch.zeros_like(logps)
        per_token = per_token + BETA * (torch.exp(ref - logps) - (ref - logps) - 1)
    del entropies
    return per_token.mean()


def _reward(model: Any, batch: Any) -> Any:
    """``RewardTrainer.compute_loss`` (trl/trainer/reward_trainer.py, v1.9.0): one forward of the
    sequence classifier over chosen + rejected, rewards chunked in two, ``-logsigmoid`` of their
    difference."""
    import torch.nn.functional as F

    outputs = model(input_ids=batch, use_cache=False)
    chosen, rejected = outputs.logits.squeeze(-1).chunk(2)
    loss = -F.logsigmoid(chosen - rejected).mean()
    del outputs
    return loss
