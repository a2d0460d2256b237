"""The transformers docs' bert-large runs, traced on fake tensors for their reserved memory.

The single-GPU training guide of the transformers docs (``perf_train_gpu_one.md`` with
``model_memory_anatomy.md``; rows 214-222 of ``data/published-memory.csv``) trains
``bert-large-uncased`` for sequence classification with the ``Trainer`` on 512 random
sequences of 512 tokens, and prints ``nvidia-smi``'s used memory after training. The planner
has no encoder models, so this module runs that step itself, with the same tracker and
allocator replay as ``trace``:

- the model: ``BertForSequenceClassification`` of bert-large's ``config.json`` (``BERT_LARGE``),
  eager attention (the only BERT attention transformers had then), dropout 0.1, in training
  mode; inputs ``input_ids`` and ``labels`` only, as the guide's dummy dataset has;
- the Trainer's step: the loss divided by the accumulation steps, ``backward`` per micro-batch,
  ``clip_grad_norm_(1.0)`` (``max_grad_norm`` default), ``optimizer.step()``, then
  ``model.zero_grad()``. The rows date the guide's figures to transformers 4.2x on torch 1.x,
  whose ``zero_grad`` zeroed gradients in place (``set_to_none=False``; torch 2.0 changed the default,
  pytorch/pytorch#92731, and the Trainer passes ``set_to_none=True`` only since
  huggingface/transformers#22136, March 2023), so the gradients stay allocated through the next
  forward: traced so. With ``set_to_none=True`` the fp32 gradients (1.25 GiB) would leave the
  forward's peak;
- the optimizers: ``adamw_hf``, the Trainer default of that time, was transformers' own
  ``AdamW``: one parameter at a time, one ``denom`` temporary each, which is what
  ``torch.optim.AdamW(foreach=False)`` does (it adds a second transient of the same size, at
  most 125 MiB here, the word embeddings); ``adafactor`` is ``transformers.optimization.Adafactor``
  with the Trainer's settings (``scale_parameter=False, relative_step=False``); 8-bit Adam is
  bitsandbytes' ``Adam8bit``;
- gradient checkpointing: ``gradient_checkpointing_enable()`` with the reentrant
  ``torch.utils.checkpoint`` the guide's transformers used.

Two steps run (the optimizer state exists from the first); the replay covers the whole stream
from the weights' ``.to("cuda")`` on, which is what the cache holds when training ends.

Not traced: the fp16 rows. ``fp16=True`` is CUDA autocast, which runs LayerNorm and softmax in
fp32; CPU autocast keeps them in 16 bits, so a CPU trace would save different tensors.
"""

from __future__ import annotations

import time
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass

BERT_LARGE: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
}
"""huggingface.co/google-bert/bert-large-uncased ``config.json`` (the memory-relevant keys); 335M
parameters with the 2-label classifier head."""

OPTIMIZERS = ("adamw_hf", "adafactor", "adam8bit")


@dataclass(frozen=True, slots=True, kw_only=True)
class BertRun:
    """One run of the guide: what the Trainer was told."""

    batch_size: int
    """``per_device_train_batch_size``."""
    grad_accum: int = 1
    """``gradient_accumulation_steps``."""
    grad_ckpt: bool = False
    """``gradient_checkpointing``."""
    optimizer: str = "adamw_hf"
    """``adamw_hf``, ``adafactor`` or ``adam8bit``."""
    seq_len: int = 512
    """Tokens per sequence (the guide's dummy data: 512)."""
    num_labels: int = 2
    """The classifier head's outputs (``from_pretrained``'s default for a bare BERT checkpoint)."""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.seq_len < 1:
            raise ValueError("batch size, accumulation steps and sequence length must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class BertTrace:
    """What the traced run allocated and what the allocator model reserved for it."""

    run: BertRun
    tracked_peak_bytes: int
    """The tracker's peak (each storage rounded to 512 B)."""
    cuda_allocated_bytes: int
    """Replayed ``max_memory_allocated`` (block sizes, unsplit remainders included)."""
    reserved_bytes: int
    """Replayed ``max_memory_reserved``."""
    fragmentation_bytes: int
    segments: int
    wall_s: float


def _optimizer(run: BertRun, model: Any) -> Any:
    import torch

    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    groups = [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}]
    if run.optimizer == "adamw_hf":
        return torch.optim.AdamW(groups, lr=5e-5, foreach=False)
    if run.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=5e-5, scale_parameter=False, relative_step=False, warmup_init=False)
    import bitsandbytes as bnb

    return bnb.optim.Adam8bit(groups, lr=5e-5)


def trace_bert(run: BertRun, *, layers: int | None = None, steps: int = 2) -> BertTrace:
    """Trace ``steps`` Trainer steps of ``run`` on fake tensors; ``layers`` truncates the encoder
    (tests use 2 layers)."""
    import torch
    import transformers
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lora_budget.trace.allocator import replay_tracker
    from lora_budget.trace.engine import cuda_kernels
    from lora_budget.trace.tracker import Tracker

    started = time.perf_counter()
    values = dict(BERT_LARGE, num_labels=run.num_labels)
    if layers is not None:
        values["num_hidden_layers"] = layers
    config = transformers.BertConfig(**values, attn_implementation="eager")
    with torch.device("meta"):
        model = transformers.BertForSequenceClassification(config)
    if run.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        model.to_empty(device="cpu")
    model.train()
    tracker = Tracker(vocab=0)
    for tensor in [*model.parameters(), *model.buffers()]:
        tracker.register(tensor, "weights")  # the checkpoint's .to("cuda"), in module order
    optimizer = _optimizer(run, model)
    with cuda_kernels(), fake_mode, tracker:
        for step in range(1, steps + 1):
            tracker.set_phase("forward", step)
            for _ in range(run.grad_accum):
                ids = torch.randint(100, 30000, (run.batch_size, run.seq_len))
                labels = torch.randint(0, 1, (run.batch_size,))
                loss = model(input_ids=ids, labels=labels).loss / run.grad_accum
                tracker.set_phase("backward")
                loss.backward()
                del loss, ids, labels
            tracker.set_phase("optimizer")
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            tracker.stub_scalars = True  # Adafactor's RMS and bitsandbytes' step read scalars
            try:
                optimizer.step()
            finally:
                tracker.stub_scalars = False
            model.zero_grad(set_to_none=False)  # torch 1.x's default
    result = replay_tracker(tracker)
    if result.peak_requested != tracker.peak.bytes:
        raise LoraBudgetError("the allocator replay disagrees with the tracker's peak")
    return BertTrace(
        run=run,
        tracked_peak_bytes=tracker.peak.bytes,
        cuda_allocated_bytes=result.peak_allocated,
        reserved_bytes=result.peak_reserved,
        fragmentation_bytes=result.fragmentation,
        segments=result.segments,
        wall_s=time.perf_counter() - started,
    )


def bert_run(row: dict[str, str]) -> tuple[BertRun | None, str]:
    """The run a bert-large row describes, or None and why it is not traced."""
    if "fp16" in row["compute_precision"].lower():
        return None, (
            "fp16=True is CUDA autocast (LayerNorm and softmax in fp32); CPU autocast keeps them in 16 bits, "
            "so the fake-tensor trace would save other tensors"
        )
    text = row["optimizer"].lower()
    optimizer = "adafactor" if "adafactor" in text else "adam8bit" if "8bit" in text else "adamw_hf"
    run = BertRun(
        batch_size=int(row["batch_size_per_gpu"]),
        grad_accum=int(row["grad_accum"]),
        grad_ckpt=row["gradient_checkpointing"].strip().lower() == "true",
        optimizer=optimizer,
        seq_len=int(row["seq_len"]),
    )
    return run, ""


def is_bert(row: dict[str, str]) -> bool:
    return "bert-large" in row["hf_model_id"].lower()
