"""Trace LitGPT's own fine-tuning step on fake tensors: its ``GPT``, ``LoRAQKVLinear``,
``chunked_cross_entropy`` and the loop of ``litgpt finetune lora``.

LitGPT is not a dependency of lora-budget (its pins would change the installed huggingface_hub),
so this module runs only where ``litgpt`` is importable, e.g. from a side directory::

    pip install --no-deps --target /tmp/litpkgs litgpt==0.4.13 lightning==2.4.0 \\
        lightning-utilities torchmetrics==1.4.1 jsonargparse
    PYTHONPATH=/tmp/litpkgs python -m lora_budget.runtime.litgpt

litgpt 0.4.13 is the first release containing 00af8b0d (2024-09-27), the last edit of the
config-hub table the published LitGPT rows come from; ``litgpt/lora.py``, ``model.py``,
``utils.py`` and ``finetune/lora.py`` are identical at the two.

What runs, as ``litgpt/finetune/lora.py`` runs it with ``precision: bf16-true``:

1. ``litgpt.lora.GPT`` from LitGPT's own named config (``Config.from_name``), built on the meta
   device under the bf16 default dtype (Fabric's ``init_module``), every parameter and buffer then
   a fake bf16 tensor (Fabric's ``convert_module``). ``model.max_seq_length`` is then set to the
   sequence length, which rebuilds the RoPE cache in fp32, as ``fit`` does after ``setup``.
2. QLoRA: every ``nn.Linear``, lm_head included, becomes bitsandbytes' ``Linear4bit`` (NF4,
   compute dtype bf16), which is what Fabric's ``BitsandbytesPrecision`` does (its layer class
   subclasses ``Linear4bit`` and keeps its forward). Lightning quantizes from fp16, so every
   quantization state records fp16 (``_half_quant_state``). LitGPT pins bitsandbytes 0.42.0,
   which cannot run on CPU: with a spec release <= 0.43.1 its ``Linear4bit.forward`` and
   ``MatMul4Bit`` are restated on the installed release's ops (``_bnb_042``): dequantize in the
   state's dtype, cast to the input's, keep the input as a ctx attribute.
3. ``mark_only_lora_as_trainable``; the spec's optimizer (LitGPT: ``torch.optim.AdamW`` for LoRA,
   ``bnb.optim.PagedAdamW`` with quantization); a warm start creates its state.
4. The model wrapped in Lightning's own ``_FabricModule`` (``fabric_module``), as
   ``fabric.setup_module`` returns it: its forward casts the logits chunks to fp32.
5. Two iterations of the loop: ``logits = model(input_ids, lm_head_chunk_size=128)``,
   ``logits[-1] = logits[-1][..., :-1, :]``, ``loss = chunked_cross_entropy(logits,
   targets[..., 1:])``, ``loss.backward()``, ``optimizer.step()``, ``optimizer.zero_grad()``, and
   ``loss`` rebound to a float (``running_loss.compute().item()`` at ``log_interval`` 1). The first
   iteration's ``logits`` list is still bound while the second forward runs. Then LitGPT's own
   ``validate`` on the batch, as ``fit`` runs it every ``eval.interval`` steps.

Not run: the model load (``init_module`` quantizes each linear as it is built; ``load_checkpoint``
reads the checkpoint on CPU and quantizes one weight at a time: the quantized model plus one fp16
weight, below the step) and ``generate_example`` (batch 1: a KV cache of 2 L kv_width
max_seq_length bf16 and one short prefill, below the validation it follows).
"""

from __future__ import annotations

import contextlib
import time
from functools import lru_cache
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.spec import TrainSpec

LITGPT_VERSION = "0.4.13"
LITGPT_COMMIT = "00af8b0d9b43eaa3f8c812e3e8bd53ef38cbb49d"

LITGPT_NAMES: dict[str, str] = {
    "Llama-2-7B": "Llama-2-7b-hf",
    "Llama-2-13B": "Llama-2-13b-hf",
    "Llama-3.1-8B": "Llama-3.1-8B",
    "Llama-3.2-1B": "Llama-3.2-1B",
    "Llama-3.2-3B": "Llama-3.2-3B",
    "Mistral-7B-v0.1": "Mistral-7B-v0.1",
    "Phi-3-mini-4k": "Phi-3-mini-4k-instruct",
    "Falcon-7B": "falcon-7b",
    "TinyLlama-1.1B": "tiny-llama-1.1b",
    "Gemma-2B": "Gemma-2b",
    "Gemma-2-2B": "Gemma-2-2b",
    "Gemma-2-9B": "Gemma-2-9b",
    "Phi-1.5": "phi-1_5",
    "Phi-2": "phi-2",
    "StableLM-Base-Alpha-3B": "stablelm-base-alpha-3b",
}
"""Catalog name -> LitGPT's config name (``litgpt/config.py``)."""


def import_litgpt() -> Any:
    try:
        import litgpt.lora
    except ImportError:
        raise LoraBudgetError(
            "tracing LitGPT needs litgpt 0.4.13 importable: pip install --no-deps --target DIR litgpt==0.4.13 "
            "lightning==2.4.0 lightning-utilities torchmetrics==1.4.1 jsonargparse, then PYTHONPATH=DIR"
        ) from None
    return litgpt.lora


def litgpt_config(spec: TrainSpec, flags: frozenset[str] | None = None) -> Any:
    """LitGPT's named config of the spec's model, at the spec's depth, with its LoRA flags (the
    spec's, or ``flags`` for a block the planner does not walk)."""
    from lora_budget.core.litgpt import parts

    lora = import_litgpt()
    name = LITGPT_NAMES.get(spec.model.name.split(" (")[0])
    if name is None:
        raise LoraBudgetError(f"no LitGPT config for {spec.model.name}; known: {', '.join(LITGPT_NAMES)}")
    chosen = flags if flags is not None else parts(spec) if spec.method != "full" else frozenset()
    config = lora.Config.from_name(
        name,
        n_layer=spec.model.shape.layers,
        lora_r=spec.rank if chosen else 0,
        lora_alpha=spec.alpha,
        lora_dropout=spec.lora_dropout,
        **{f"lora_{p}": p in chosen for p in ("query", "key", "value", "projection", "mlp", "head")},
    )
    s = spec.model.shape
    mine = (s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab)
    theirs = (
        config.n_embd,
        config.n_head,
        config.n_query_groups,
        config.head_size,
        config.intermediate_size,
        config.padded_vocab_size,
    )
    if mine != theirs:
        raise LoraBudgetError(f"LitGPT's {name} has widths {theirs}, the catalog's {spec.model.name} {mine}")
    return config


def build_litgpt(spec: TrainSpec, fake_mode: Any, flags: frozenset[str] | None = None) -> Any:
    """LitGPT's model of ``spec`` with fake bf16 tensors (and 4-bit linears for QLoRA)."""
    import torch

    from lora_budget.runtime.build import Built, _materialize, _prime_bnb_tables, static_tensors

    lora = import_litgpt()
    config = litgpt_config(spec, flags)
    dtype = torch.bfloat16 if spec.dtype == "bf16" else torch.float16
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = lora.GPT(config)
    finally:
        torch.set_default_dtype(previous)
    if spec.method == "qlora":
        _linears_to_4bit(model, spec)
        _prime_bnb_tables("cpu")
    lora.mark_only_lora_as_trainable(model)
    with fake_mode:
        _materialize(model, spec, "cpu")
    if spec.method == "qlora":
        _half_quant_state(model)
    with fake_mode:
        model.max_seq_length = spec.seq_len  # fit(): RoPE cache rebuilt for the data's length, fp32
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Built(model=model, static=static_tensors(model), trainable=trainable, output_head=model.lm_head)


def _linears_to_4bit(model: Any, spec: TrainSpec) -> None:
    """Every ``nn.Linear`` -> ``Linear4bit`` on meta, as Lightning's ``_convert_layers`` does with no
    ``ignore_modules`` (lm_head's ``linear`` too)."""
    import bitsandbytes as bnb
    import torch

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            new = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16 if spec.dtype == "bf16" else torch.float16,
                compress_statistics=spec.double_quant,
                quant_type=spec.quant,
                quant_storage=torch.uint8,
                device="meta",
            )
            if child.bias is not None:
                new.bias = torch.nn.Parameter(torch.empty_like(child.bias), requires_grad=False)
            setattr(parent, name, new)


def fabric_module(model: Any, spec: TrainSpec) -> Any:
    """``fabric.setup_module(model)`` on one device: Lightning's ``_FabricModule`` over the model.

    Its ``forward`` (lightning 2.4 ``fabric/wrappers.py`` 135-146) casts the inputs to the
    precision's dtype, runs the model under it as the default dtype, and then casts **every
    floating output to the default dtype** (``precision.convert_output``: ``HalfPrecision`` and
    ``BitsandbytesPrecision`` both call ``_convert_fp_tensor(..., torch.get_default_dtype())``,
    ``plugins/precision/half.py`` 61-62, ``bitsandbytes.py`` 155-156): the bf16 logits chunks come
    back as fp32 copies, which the loss then reads.
    """
    import torch
    from lightning.fabric.plugins.precision import BitsandbytesPrecision, HalfPrecision
    from lightning.fabric.strategies import SingleDeviceStrategy
    from lightning.fabric.wrappers import _FabricModule

    dtype = torch.bfloat16 if spec.dtype == "bf16" else torch.float16
    if spec.method == "qlora":
        precision = BitsandbytesPrecision(spec.quant + ("-dq" if spec.double_quant else ""), dtype)
    else:
        precision = HalfPrecision("bf16-true" if spec.dtype == "bf16" else "16-true")
    return _FabricModule(model, SingleDeviceStrategy(device=torch.device("cpu"), precision=precision))


def _half_quant_state(model: Any) -> None:
    """Lightning's ``_Linear4bit.quantize`` quantizes ``weight.to(dtype=torch.half)``
    (``fabric/plugins/precision/bitsandbytes.py`` 334), so every quantization state records fp16:
    ``dequantize_4bit`` makes an fp16 weight, which ``MatMul4Bit`` then casts to the bf16 input's
    dtype (``.to(A.dtype)``)."""
    import bitsandbytes as bnb
    import torch

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.weight.quant_state.dtype = torch.float16
            if hasattr(m, "support_avx512bf16_for_cpu"):
                m.support_avx512bf16_for_cpu = False  # a CPU-inference repacking, never on CUDA


@lru_cache(maxsize=1)
def _matmul4bit_042() -> Any:
    """bitsandbytes 0.42.0's ``MatMul4Bit`` (``autograd/_functions.py`` 494-548), restated on the
    installed release's ops because 0.42.0 has no CPU kernels:

    - forward: ``linear(A, dequantize_4bit(B, state).to(A.dtype).t(), bias)`` (line 516), then
      ``ctx.tensors = (A, B)`` when A or B needs a gradient (522-523): a plain ctx attribute, not
      ``save_for_backward``, so backward does not free it; A lives as long as the graph does.
    - backward: ``grad_output @ dequantize_4bit(B, state).to(grad_output.dtype).t()`` (546).

    The dequantized weight comes out in the quantization state's dtype; ``.to`` copies it when that
    is not the input's dtype (Lightning's fp16 state under bf16: two weight-sized transients).
    """
    import torch
    from bitsandbytes import functional as F

    class MatMul4Bit042(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, A: Any, B: Any, out: Any = None, bias: Any = None, quant_state: Any = None) -> Any:
            output = torch.nn.functional.linear(A, F.dequantize_4bit(B, quant_state).to(A.dtype).t(), bias)
            ctx.state = quant_state
            ctx.tensors = (A, B) if any(ctx.needs_input_grad[:2]) else (None, None)
            return output

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> Any:
            _, B = ctx.tensors
            grad_A = None
            if ctx.needs_input_grad[0]:
                grad_A = torch.matmul(grad_output, F.dequantize_4bit(B, ctx.state).to(grad_output.dtype).t())
            return grad_A, None, None, None, None

    return MatMul4Bit042


@contextlib.contextmanager
def _bnb_042(enabled: bool) -> Any:
    """bitsandbytes <= 0.43.1 as LitGPT pins it (0.42.0): ``Linear4bit.forward`` (``nn/modules.py``
    240-260: the bias cast to the input's dtype, the input to the compute dtype, ``matmul_4bit`` of
    the transposed packed weight, the output back to the input's dtype) and ``matmul_4bit``
    reaching ``MatMul4Bit`` for every multi-token input (``_functions.py`` 565-578)."""
    if not enabled:
        yield
        return
    from unittest import mock

    import bitsandbytes as bnb

    matmul = _matmul4bit_042()

    def forward(self: Any, x: Any) -> Any:
        if self.bias is not None and self.bias.dtype != x.dtype:
            self.bias.data = self.bias.data.to(x.dtype)
        if not self.compute_type_is_set:
            self.set_compute_type(x)
            self.compute_type_is_set = True
        inp_dtype = x.dtype
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        out = matmul.apply(x, self.weight.t(), None, bias, self.weight.quant_state)
        return out.to(inp_dtype)

    with mock.patch.object(bnb.nn.Linear4bit, "forward", forward):
        yield


def fit_iterations(
    model: Any, optimizer: Any, batch: Any, hooks: Any, iterations: int = 2, evaluate: bool = True
) -> None:
    """``litgpt/finetune/lora.py`` ``fit``'s loop body, ``iterations`` times (no accumulation), with
    ``model`` the ``_FabricModule``; then, with ``evaluate``, its periodic ``validate`` (lines
    347-349: after an optimizer step, while the step's ``logits`` are still bound) on the batch."""
    from litgpt.finetune.lora import validate
    from litgpt.utils import chunked_cross_entropy

    input_ids, targets = batch
    logits = None
    for step in range(1, iterations + 1):
        hooks.on_phase("forward", step)
        logits = model(input_ids, lm_head_chunk_size=128)  # the previous list is released only now
        logits[-1] = logits[-1][..., :-1, :]
        loss = chunked_cross_entropy(logits, targets[..., 1:])
        hooks.on_phase("backward", step)
        loss.backward()
        hooks.after_backward(step)
        hooks.on_phase("optimizer", step)
        optimizer.step()
        hooks.after_step(step)
        hooks.on_phase("zero_grad", step)
        optimizer.zero_grad()
        loss = 1.0  # running_loss.compute().item(): the graph's last reference goes
    if evaluate:
        from litgpt.args import EvalArgs

        hooks.on_phase("evaluation", iterations)
        validate(None, model, [{"input_ids": input_ids, "labels": targets}], EvalArgs(max_iters=1), verbose=False)
    del logits


def validate_first(model: Any, batch: Any, hooks: Any) -> None:
    """lit-gpt's 2023 loop validates once before training (``validate(...)  # sanity check``), with no
    step before it: LitGPT's ``validate`` on the batch."""
    from litgpt.args import EvalArgs
    from litgpt.finetune.lora import validate

    input_ids, targets = batch
    hooks.on_phase("evaluation", 0)
    validate(None, model, [{"input_ids": input_ids, "labels": targets}], EvalArgs(max_iters=1), verbose=False)


def trace_litgpt(
    spec: TrainSpec, iterations: int = 2, flags: frozenset[str] | None = None, previous_step: bool | None = None
) -> Any:
    """Trace ``iterations`` LitGPT fit iterations of ``spec`` (after a warm optimizer start).

    ``flags``: LitGPT's LoRA flags, for a spec of a LitGPT block ``--framework litgpt`` does not walk
    (planned with another framework's layout): the trace then runs LitGPT's code for it anyway,
    reading the spec's model, method, rank, dropout, shapes, optimizer and bitsandbytes release;
    ``previous_step`` then stands for the spec field such a spec cannot carry."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lora_budget.runtime.loop import make_optimizer
    from lora_budget.trace.engine import Hooks, _result, cuda_kernels, register_static
    from lora_budget.trace.tracker import Tracker

    if (spec.framework != "litgpt" and flags is None) or spec.gpus > 1 or spec.grad_ckpt or spec.grad_accum > 1:
        raise LoraBudgetError("the LitGPT trace runs framework litgpt, one GPU, no checkpointing, no accumulation")
    started = time.perf_counter()
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    built = build_litgpt(spec, fake_mode, flags)
    tracker = Tracker(vocab=spec.model.shape.vocab)
    register_static(tracker, built, spec)
    optimizer = make_optimizer(spec, built.trainable, paged=False)
    hooks = Hooks(built, tracker, optimizer, spec.optimizer.startswith("paged"), iterations, True, None)
    with (
        hooks.installed(),
        _bnb_042(spec.bnb_keeps_input),
        cuda_kernels(),
        fake_mode,
        tracker,
    ):
        hooks.on_phase("warm_start", 0)
        for p in built.trainable:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        hooks.after_step(0)
        optimizer.zero_grad(set_to_none=True)
        batch = torch.randint(0, spec.model.shape.vocab, (spec.batch_size, spec.seq_len))
        targets = torch.randint(0, spec.model.shape.vocab, (spec.batch_size, spec.seq_len))
        tracker.register(batch, "activations")
        tracker.register(targets, "activations")
        model = fabric_module(built.model, spec)
        if spec.previous_step if previous_step is None else previous_step:
            fit_iterations(model, optimizer, (batch, targets), hooks, iterations)
        else:  # lit-gpt 2023: validate first, then the longest batch in the first iteration
            validate_first(model, (batch, targets), hooks)
            fit_iterations(model, optimizer, (batch, targets), hooks, 1, evaluate=False)
        del batch, targets
    return _result(spec, tracker, hooks, time.perf_counter() - started, True, False)


if __name__ == "__main__":
    import sys

    from lora_budget.runtime.litgpt_cases import write_cases, write_published

    if sys.argv[1:2] == ["--published"]:
        write_published("lora_budget/validation/data/litgpt-published-traces.json", "--missing" in sys.argv)
    else:
        write_cases("lora_budget/validation/data/litgpt-trace.json")
