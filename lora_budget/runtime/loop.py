"""The reference training loop every engine runs, and the optimizer each spec names.

``run_steps`` is the loop README.md describes: ``loss = model(input_ids, labels=labels).loss``,
the output object (and with it the logits) dropped before ``backward``, as the transformers
Trainer does; ``optimizer.step()``; ``optimizer.zero_grad(set_to_none=True)``. No autocast.
With gradient accumulation each micro-batch's loss is divided by the number of micro-batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec

LEARNING_RATE = 1e-4

PAGED_FALLBACK = {"paged_adamw": "adamw32bit", "paged_adamw8bit": "adamw8bit"}
"""Paged bitsandbytes optimizers need CUDA unified memory; without it they run unpaged and the
state they would page is reported as pageable."""


def make_optimizer(spec: TrainSpec, params: list[Any], *, paged: bool = True, lr: float | None = None) -> Any:
    """The optimizer ``spec.optimizer`` names, over ``params``.

    - adamw: ``torch.optim.AdamW(fused=True)``, the Trainer's ``adamw_torch_fused`` (its default from
      transformers 4.54 on torch 2.8).
    - adamw_foreach: ``torch.optim.AdamW(foreach=True)``, the path torch takes on CUDA when neither is
      given (the Trainer's ``adamw_torch``), set explicitly so CPU runs take it too.
    - adamw8bit / paged_adamw8bit / paged_adamw: bitsandbytes' ``AdamW8bit`` / ``PagedAdamW8bit``
      / ``PagedAdamW`` (32-bit state); with ``paged=False`` the unpaged equivalent.
    - sgd / sgd_momentum (0.9) / adafactor: torch, with the multi-tensor (``foreach``) code path
      that torch picks by default for CUDA tensors, set explicitly so CPU runs take it too.

    ``lr``: the learning rate (default ``LEARNING_RATE``, Adafactor 1e-2); it changes no memory.
    """
    import torch

    name = spec.optimizer
    rate = LEARNING_RATE if lr is None else lr
    if name == "adamw":
        return torch.optim.AdamW(params, lr=rate, fused=True)
    if name == "adamw_foreach":
        return torch.optim.AdamW(params, lr=rate, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=rate, foreach=True)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=rate, momentum=0.9, foreach=True)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-2 if lr is None else lr, foreach=True)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise LoraBudgetError(f"optimizer {name} needs bitsandbytes: pip install 'lora-budget[torch]'") from None
    if not paged:
        name = PAGED_FALLBACK.get(name, name)
    cls = {
        "adamw8bit": bnb.optim.AdamW8bit,
        "adamw32bit": bnb.optim.AdamW32bit,
        "paged_adamw8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw": bnb.optim.PagedAdamW,
    }[name]
    return cls(params, lr=rate)


def optimizer_state_tensors(optimizer: Any) -> list[tuple[str, Any]]:
    """(key, tensor) for every tensor the optimizer keeps between steps."""
    import torch

    out = []
    for state in optimizer.state.values():
        out.extend((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))
    return out


def step_loss(model: Any, spec: TrainSpec, batch: Any, reference: Any = None) -> Any:
    """The loss of one micro-batch as ``spec.loss_kernel`` computes it (for an objective other than
    sft, as TRL computes it: ``runtime.objectives``; ``reference``: a frozen reference model).

    - full-ce: ``model(input_ids, labels=labels).loss`` (transformers' ``ForCausalLMLoss``), the
      output object and with it the logits dropped before backward, as the Trainer does.
    - chunked-ce: torchtune's recipe step on the same model: the decoder's last hidden state is
      split along the sequence into ``loss_chunks`` chunks (``tensor_split``), the output head runs
      per chunk, labels are shifted left with an ignored last position, and the loss is the sum
      of ``cross_entropy(chunk.float(), labels, reduction="sum")`` over the chunks divided by the
      number of counted tokens (``CEWithChunkedOutputLoss``); the chunks are dropped before backward.
    - fused-ce: Liger's and Cut Cross-Entropy's kernels are Triton-only, so no CPU trace; the
      planner derives them from their source.

    With ``spec.autocast_on`` the forward and the loss run under ``torch.autocast`` in the spec's
    16-bit dtype, as accelerate wraps the Trainer's forward (backward runs outside it, as there).
    On fake CPU tensors that is CPU autocast, whose lower-precision list holds linear, matmul and
    SDPA as CUDA's does; CUDA's fp32 list (layer_norm, pow, softmax, ...) is not CPU's, so the
    trace refuses autocast for LayerNorm and tanh-GELU models, where the two would differ.
    """
    if spec.autocast_on:
        import torch

        from lora_budget.runtime.build import torch_dtype

        with torch.autocast(device_type=batch.device.type, dtype=torch_dtype(spec.dtype)):
            return _loss(model, spec, batch, reference)
    return _loss(model, spec, batch, reference)


def _loss(model: Any, spec: TrainSpec, batch: Any, reference: Any) -> Any:
    if spec.objective != "sft":
        from lora_budget.runtime.objectives import objective_loss

        return objective_loss(model, spec, batch, reference)
    kernel = spec.loss_kernel
    if kernel == "full-ce" and spec.framework in ("plain", "hf-trainer") and spec.transformers_version < (4, 49):
        from lora_budget.runtime.legacy_loss import legacy_causal_lm_loss

        return legacy_causal_lm_loss(model, spec, batch)  # the shifted-logits loss of transformers < 4.49
    if kernel == "full-ce":
        out = model(input_ids=batch, labels=batch)
        loss = out.loss
        del out
        return loss
    if kernel == "fused-ce":
        raise LoraBudgetError(
            "--loss fused-ce (Liger, Cut Cross-Entropy) runs Triton GPU kernels that cannot run on fake "
            "CPU tensors; `lora-budget plan` models it from Liger's source"
        )
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    hidden = decoder(input_ids=batch).last_hidden_state
    labels = torch.cat([batch[:, 1:], torch.full_like(batch[:, :1], -100)], dim=1)
    logits = [head(chunk) for chunk in hidden.tensor_split(spec.loss_chunks, dim=1)]
    del hidden
    total = None
    for chunk, target in zip(logits, labels.tensor_split(spec.loss_chunks, dim=1), strict=True):
        part = F.cross_entropy(
            chunk.reshape(-1, chunk.size(-1)).float(), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total = part if total is None else total + part
    del logits, chunk
    return total / (labels != -100).sum()


def run_steps(
    model: Any,
    optimizer: Any,
    spec: TrainSpec,
    batch: Any,
    *,
    steps: int,
    on_phase: Callable[[str, int], None] = lambda phase, step: None,
    on_loss: Callable[[int, Any], None] = lambda step, loss: None,
    after_backward: Callable[[int], None] = lambda step: None,
    after_step: Callable[[int], None] = lambda step: None,
    warm_start: bool = False,
    reference: Any = None,
    eval_batch: Any = None,
    offload: Any = None,
) -> None:
    """``steps`` optimizer steps of the reference loop on one fixed batch of token ids.

    ``warm_start``: first run ``optimizer.step()`` once on zero gradients (step 0), which creates
    the optimizer state through the optimizer's own code exactly as a first step would; nothing
    else a first forward/backward allocates survives it. The trace uses it to reach the
    steady state (step >= 2) at the cost of one step instead of two.
    """
    if warm_start:
        import torch

        params = [p for group in optimizer.param_groups for p in group["params"]]
        on_phase("warm_start", 0)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        after_step(0)
        optimizer.zero_grad(set_to_none=True)
    for step in range(1, steps + 1):
        for _ in range(spec.grad_accum):
            on_phase("forward", step)
            with offload.hooks() if offload is not None else contextlib.nullcontext():
                loss = step_loss(model, spec, batch, reference)
                on_phase("backward", step)
                (loss / spec.grad_accum if spec.grad_accum > 1 else loss).backward()
            if offload is not None:
                offload.end_of_backward()
            on_loss(step, loss.detach())
            del loss
        after_backward(step)
        on_phase("optimizer", step)
        optimizer.step()
        after_step(step)
        on_phase("zero_grad", step)
        optimizer.zero_grad(set_to_none=True)
    if eval_batch is not None:
        evaluate(model, spec, eval_batch, on_phase=on_phase, step=steps)


def evaluate(model: Any, spec: TrainSpec, batch: Any, *, on_phase: Callable[[str, int], None], step: int) -> None:
    """One evaluation step as the Trainer runs it between optimizer steps: ``model.eval()``, the loss
    under ``no_grad`` (``prediction_step`` with labels; without ``compute_metrics`` no logits are kept,
    ``Trainer.evaluate`` passing ``prediction_loss_only=True``), then back to ``train()``."""
    import torch

    on_phase("evaluation", step)
    model.eval()
    with torch.no_grad():
        loss = step_loss(model, spec, batch)
    del loss
    model.train()
