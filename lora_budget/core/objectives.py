"""The loss of preference, RL and reward objectives, as TRL v1.9.0 computes it: logits bytes per phase.

An SFT step's logits spike is transformers' cross-entropy (``peak._loss_terms``). The other
objectives take per-token log-probabilities with TRL's ``selective_log_softmax``
(``trl/trainer/utils.py``), whose 16-bit path loops over the rows (sequences) and keeps each row's
``log_softmax`` output for backward. With ``rows`` sequences of ``P`` logit positions and ``cV``
bytes per position (c the logits' element size, V the vocabulary), the trace (``runtime/objectives.py``,
which runs TRL's own function) finds, and the op-by-op reading below explains:

Preference pairs (dpo, ipo, orpo, simpo; ``DPOTrainer._compute_loss``), P = s:

- loss, policy: the logits (rows P) and every row's saved ``log_softmax`` output of the shifted
  logits (rows (P - 1)): ``cV rows (2P - 1)``.
- loss, reference (dpo/ipo unless precomputed): the policy's outputs stay referenced while the
  reference forward runs under ``no_grad``: its logits (rows P) and, inside its row loop, the
  previous and the current row's ``log_softmax`` output (``min(2, rows) (P - 1)``).
- backward: the outputs are gone; ``UnbindBackward`` stacks the rows' gradients (rows (P - 1)) and
  the shift's ``SliceBackward`` makes a zero tensor of the logits' shape (rows P) to copy them
  into: ``cV rows (2P - 1)`` again.

GRPO (``GRPOTrainer._get_per_token_logps_and_entropies``), C completion tokens, the model asked
for ``logits_to_keep = C + 1`` positions:

- loss: the logits (rows (C + 1)), the saved rows (rows C), the contiguous copy that
  ``entropy_from_logits`` makes with ``reshape`` of the sliced view (rows C), and in its
  ``no_grad`` loop over chunks of 128 positions the chunk's ``log_softmax``, ``exp`` and product
  (3 min(128, rows C)).
- backward: the stacked row gradients and the inner slice's zero tensor (rows C each), the outer
  slice's zero tensor and the clone ``CopySlices`` makes of it for the in-place temperature
  division on the view (rows (C + 1) each).

fp32 logits (an fp32 model, or a kbit-prepared one without autocast) take the other branch of
``selective_log_softmax``: ``gather`` of the logits and a ``logsumexp`` per row, which keeps the
logits themselves (its input) for backward and no ``log_softmax`` output. The loss holds the
logits (rows P; the reference's too when it runs) and, inside ``logsumexp``, the ``(x - max)``
row that ATen's ``logsumexp_out_impl`` allocates (``ReduceOps.cpp``; a C++ temporary the fake
trace cannot see, so the tests add it to the traced figure); backward holds rows (4P - 3):
``gather``'s dense zero gradient and the stacked per-row ``logsumexp`` gradients with their
sum. GRPO's fp32 loss is the bf16 one without the saved rows (rows C); its backward is the same.

Reward (``RewardTrainer``): the classifier's logits are one number per position; no vocabulary
tensor exists.

Known error: the reference forward's own layer transients (no ``no_grad`` layer keeps anything,
but its MLP intermediates exist for a moment) are not compared against its logits; for
vocabularies much smaller than 8x the MLP width they can exceed the reference's logits term.
"""

from __future__ import annotations

from lora_budget.records import dataclass
from lora_budget.spec import TrainSpec, grpo_completion

ENTROPY_CHUNK = 128
"""``entropy_from_logits``' default ``chunk_size`` (TRL v1.9.0)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectiveLoss:
    """The batch- and sequence-independent part of an objective's logits terms."""

    kind: str
    """pairs, grpo or reward."""
    cv: int
    """Bytes per logit position: c V."""
    reference: bool
    """A reference forward runs inside the loss (adapter-disabled policy or a frozen copy)."""
    completion_len: int
    """grpo: completion tokens (0: TRL's default, 256, at most s - 1)."""
    fp32: bool = False
    """fp32 logits: ``selective_log_softmax``'s gather + logsumexp branch."""

    def logits_bytes(self, rows: int, seq_len: int) -> tuple[int, int]:
        """(loss phase, start of backward) logits bytes for ``rows`` sequences of ``seq_len``."""
        if self.kind == "reward":
            return 0, 0
        if self.kind == "grpo":
            c = grpo_completion(self.completion_len, seq_len)
            saved = 0 if self.fp32 else rows * c  # the 16-bit path keeps each row's log_softmax output
            fwd = rows * (c + 1) + saved + rows * c + 3 * min(ENTROPY_CHUNK, rows * c)
            bwd = 2 * rows * c + 2 * rows * (c + 1)
            return self.cv * fwd, self.cv * bwd
        p = seq_len
        if self.fp32:
            fwd = rows * p * (2 if self.reference else 1) + (p - 1)
            return self.cv * fwd, self.cv * rows * (4 * p - 3)
        policy = rows * (2 * p - 1)
        ref = rows * p + min(2, rows) * (p - 1) if self.reference else 0
        return self.cv * (policy + ref), self.cv * policy


def objective_loss(spec: TrainSpec, logits_bytes: int) -> ObjectiveLoss | None:
    """The objective's loss terms (None for sft, whose loss is the cross-entropy kernel's)."""
    if spec.objective == "sft":
        return None
    kind = "reward" if spec.objective == "reward" else "grpo" if spec.objective == "grpo" else "pairs"
    return ObjectiveLoss(
        kind=kind,
        cv=logits_bytes * spec.model.shape.vocab,
        reference=spec.objective != "grpo" and spec.reference_kind in ("adapter", "copy"),
        completion_len=spec.completion_len,
        fp32=logits_bytes == 4,
    )
