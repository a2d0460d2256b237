"""``trace``: run the reference step on fake tensors and attribute its peak to our categories.

The fake tensors live on a fake *CPU* device. A CPU-only PyTorch build cannot index fake CUDA
tensors (``x[..., None]`` needs a CUDA device guard, which such a build lacks), and on a fake
device no kernel runs, so the device only decides which aten ops the Python code picks. The
differences that matter for memory are handled explicitly: SDPA dispatches to the CPU flash
kernel, which keeps the same output and fp32 logsumexp as CUDA flash attention; optimizers are
created with the multi-tensor/fused path CUDA would use; paged optimizers run unpaged and their
large states are reported as pageable; allocator rounding is CUDA's.

Attribution of the peak (the event with the most live bytes over the whole run):

- weights, quant_state, adapter: registered parameters, buffers and quantization state;
- gradients: storages that end up as a trainable parameter's ``.grad``;
- optimizer: storages held in the optimizer's state;
- logits: tensors whose last dimension is the vocabulary (logits, their fp32 copy, the
  log-softmax output and the gradients flowing back through them);
- activations: what the forward pass leaves for backward, i.e. storages created during the
  forward that are still alive when it returns;
- temporaries: everything else (forward transients, layers recomputed by checkpointing, the
  backward working set, optimizer-step scratch).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any

from lora_budget.breakdown import CATEGORIES, Breakdown
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass, field
from lora_budget.runtime.build import Built, build, cpu_autocast_differs, import_stack
from lora_budget.runtime.loop import make_optimizer, optimizer_state_tensors, run_steps
from lora_budget.spec import TrainSpec
from lora_budget.trace.allocator import Replay, replay_tracker

PAGE_MIN_NUMEL = 100_000
"""bitsandbytes pages optimizer state only for tensors of at least 1e5 elements."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, label): units are aten ops; total is an estimate until step 1 ends."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceResult:
    """What the traced step allocated, attributed at its peak."""

    spec: TrainSpec
    breakdown: Breakdown
    peak_step: int
    peak_op: str
    peak_module: str
    paged_bytes: int
    """Optimizer state a paged optimizer keeps in unified memory (included in the peak)."""
    ops: int
    wall_s: float
    step_peaks: dict[int, int] = field(default_factory=dict)
    timeline: tuple[tuple[int, int, str, int], ...] = ()
    """(event, live bytes, phase, step) for every op and phase marker."""
    real: bool = False
    """True when real tensors were traced (the fake-vs-real check)."""
    state_bytes: dict[str, int] = field(default_factory=dict)
    """Whole-step sizes, independent of the peak's phase: every gradient at the end of the last
    backward, every optimizer-state tensor after the last step, and the registered weights,
    quantization state and adapters."""
    reserved: Replay | None = None
    """The event stream replayed through the caching-allocator model (``allocator.py``):
    predicted ``max_memory_reserved`` and fragmentation."""

    @property
    def peak_bytes(self) -> int:
        return self.breakdown.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        b = self.breakdown
        return {
            "peak_bytes": b.peak_bytes,
            "peak_phase": b.phase,
            "peak_step": self.peak_step,
            "peak_op": self.peak_op,
            "peak_module": self.peak_module,
            **{f"{c}_bytes": getattr(b, c) for c in CATEGORIES},
            "paged_bytes": self.paged_bytes,
            "step_peak_bytes": {str(k): v for k, v in self.step_peaks.items()},
            "ops": self.ops,
            "wall_s": round(self.wall_s, 3),
            "state_bytes": dict(self.state_bytes),
            **(
                {
                    "cuda_allocated_bytes": self.reserved.peak_allocated,
                    "reserved_bytes": self.reserved.peak_reserved,
                    "fragmentation_bytes": self.reserved.fragmentation,
                }
                if self.reserved is not None
                else {}
            ),
        }


def trace(
    spec: TrainSpec,
    *,
    fake: bool = True,
    steps: int = 1,
    warm_start: bool = True,
    progress: Progress | None = None,
    keep_timeline: bool = False,
) -> TraceResult:
    """Trace reference steps of ``spec``; ``fake=False`` runs real tensors on CPU.

    By default one full step is traced after a warm start that creates the optimizer state
    (``run_steps``), so the peak is the steady-state step's. ``warm_start=False, steps=2`` runs
    two full steps instead (twice the time, the same peak).
    """
    import_stack(need_bnb=spec.method in ("qlora", "lora8bit") or "8bit" in spec.optimizer)
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lora_budget.trace.tracker import Tracker

    if steps < 1:
        raise LoraBudgetError("steps must be at least 1")
    if spec.framework == "litgpt":
        # LitGPT's own model and loop, where litgpt is importable (runtime/litgpt.py says how)
        from lora_budget.runtime.litgpt import import_litgpt, trace_litgpt

        import_litgpt()
        return trace_litgpt(spec)
    shape = spec.model.shape
    if spec.experts_quantized and shape.is_moe:
        raise LoraBudgetError(
            f"transformers {spec.transformers} builds MoE experts from nn.Linear modules that bitsandbytes "
            "quantizes; the installed transformers 5 stores them as 3-D parameters, so that layout is planned "
            "from its source (core/static.py), not traced; trace with --transformers 5.24"
        )
    if fake and spec.autocast_on and not shape.derived and (shape.norm == "layer" or shape.act == "gelu_new"):
        raise _autocast_refused(spec)  # a derived shape does not know its norms: checked on the built model
    if spec.compile:
        from lora_budget.runtime.compiled import check_traceable

        check_traceable(spec)
    if spec.gpus > 1:
        from lora_budget.runtime import fsdp

        if not fake:
            raise LoraBudgetError("multi-GPU specs are traced on fake tensors only (one rank of a fake world)")
        if spec.strategy != "fsdp":
            raise LoraBudgetError(f"the trace runs FSDP2 only; --strategy {spec.strategy} is plan-only")
        world = fsdp.fake_world(spec.gpus)
    else:
        world = contextlib.nullcontext()
    started = time.perf_counter()
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    with world as mesh:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            built = build(spec, device="cpu", fake_mode=fake_mode, mesh=mesh)
            if fake and spec.autocast_on and shape.derived and cpu_autocast_differs(built.model, spec.model.config):
                raise _autocast_refused(spec)
            reference = _reference(spec, fake_mode)
        tracker = Tracker(vocab=spec.model.shape.vocab)
        register_static(tracker, built, spec)
        if spec.ckpt_offload:
            from lora_budget.runtime import offload

            offload.install(built.model, *offload.fake_movers())
        if spec.compile:
            from lora_budget.runtime.compiled import compile_layers

            compile_layers(built.model)
        if reference is not None:
            for tensor in reference.parameters():
                tracker.register(tensor, "weights")  # the frozen reference copy
        optimizer = make_optimizer(spec, built.trainable, paged=False)
        paged = spec.optimizer.startswith("paged")
        hooks = Hooks(built, tracker, optimizer, paged, steps, fake, progress, sharded=mesh is not None)
        _run(spec, built, tracker, optimizer, hooks, fake_mode, steps, warm_start, reference)
    wall_s = time.perf_counter() - started
    return _result(spec, tracker, hooks, wall_s, fake, keep_timeline)


def _autocast_refused(spec: TrainSpec) -> LoraBudgetError:
    return LoraBudgetError(
        f"{spec.model.name}: autocast on fake CPU tensors follows CPU autocast, which keeps layer_norm and pow "
        "in 16 bits where CUDA's runs them in fp32; this LayerNorm / tanh-GELU model is traced without "
        "autocast only (--no-autocast); `lora-budget plan` still answers"
    )


def _run(
    spec: TrainSpec,
    built: Built,
    tracker: Any,
    optimizer: Any,
    hooks: Hooks,
    fake_mode: Any,
    steps: int,
    warm_start: bool,
    reference: Any = None,
) -> None:
    import torch
    from torch._subclasses.fake_tensor import UnsupportedOperatorException

    sharded = contextlib.ExitStack()
    if hooks.sharded:
        from lora_budget.runtime.fsdp import quant_state_restored, resizes_reported

        sharded.enter_context(resizes_reported(tracker.storage_resized))
        sharded.enter_context(quant_state_restored(spec))
    try:
        with (
            hooks.installed(),
            _unpacked_batch(),
            cuda_kernels(),
            sharded,
            fake_mode or contextlib.nullcontext(),
            tracker,
        ):
            rows = spec.batch_size * spec.sequences_per_example  # chosen + rejected for pairs
            batch = torch.randint(0, spec.model.shape.vocab, (rows, spec.seq_len))
            tracker.register(batch, "activations")
            offload = None
            if spec.activation_offload:
                from lora_budget.runtime.offload import ActivationOffload, fake_movers

                def is_param(t: Any) -> bool:
                    block = tracker.block_of(t)
                    return block is not None and block.born < 0

                rules = "torchtune" if spec.framework == "torchtune" else "trl"
                offload = ActivationOffload(built.output_head, *fake_movers(), is_param, rules=rules)
            eval_batch = None
            if spec.eval_batch_size:
                eval_batch = torch.randint(0, spec.model.shape.vocab, (spec.eval_batch_size, spec.seq_len))
            run_steps(
                built.model,
                optimizer,
                spec,
                batch,
                steps=steps,
                on_phase=hooks.on_phase,
                after_backward=hooks.after_backward,
                after_step=hooks.after_step,
                warm_start=warm_start,
                reference=reference,
                eval_batch=eval_batch,
                offload=offload,
            )
            del batch, eval_batch
    except UnsupportedOperatorException as exc:
        where = tracker.last_module or "the step"
        raise LoraBudgetError(
            f"the trace hit an op with no fake-tensor kernel ({exc.func}) in {where}; "
            "`lora-budget plan` still answers for this spec"
        ) from None
    except torch._subclasses.fake_tensor.DataDependentOutputException as exc:
        where = tracker.last_module or "the step"
        raise LoraBudgetError(
            f"the trace hit a data-dependent op ({exc.func}) in {where}; fake tensors cannot follow it, "
            "`lora-budget plan` still answers for this spec"
        ) from None
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        where = tracker.last_module or "the step"  # the stack has unwound by now
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoraBudgetError(
            f"the trace failed in {where} (last op {tracker._op}): {first_line}; "
            "`lora-budget plan` still answers for this spec"
        ) from None


def _reference(spec: TrainSpec, fake_mode: Any) -> Any:
    """The frozen reference model when the spec's objective loads one (``reference_kind`` copy)."""
    if spec.reference_kind != "copy":
        return None
    if spec.gpus > 1:
        raise LoraBudgetError("a reference model copy is traced on one GPU only; `lora-budget plan` answers for more")
    from lora_budget.runtime.build import build_reference

    return build_reference(spec, device="cpu", fake_mode=fake_mode)


def _result(spec: TrainSpec, tracker: Any, hooks: Hooks, wall_s: float, fake: bool, keep_timeline: bool) -> TraceResult:
    from lora_budget.trace.attribute import attribute

    breakdown, paged_bytes = attribute(tracker)
    full = timeline_rows(tracker)
    step_peaks: dict[int, int] = {}
    for _, live, _, step in full:
        if step and live > step_peaks.get(step, 0):
            step_peaks[step] = live
    timeline = tuple(full) if keep_timeline else ()
    return TraceResult(
        spec=spec,
        breakdown=breakdown,
        peak_step=tracker.peak.step,
        peak_op=tracker.peak.op,
        peak_module=tracker.peak.module,
        paged_bytes=paged_bytes,
        ops=tracker.ops,
        wall_s=wall_s,
        step_peaks=step_peaks,
        timeline=timeline,
        real=not fake,
        state_bytes=_state_bytes(tracker, hooks),
        reserved=_reserved(tracker),
    )


def _reserved(tracker: Any) -> Replay:
    """Replay the stream; the replay's peak of requested bytes is the tracker's, or one is wrong.

    Registered tensors (weights, quantization state) come first in the stream, in the model's
    parameter order: an approximation of the order the loader allocated them.
    """
    replayed = replay_tracker(tracker)
    if replayed.peak_requested != tracker.peak.bytes:
        raise LoraBudgetError(
            f"internal: the allocator replay peaks at {replayed.peak_requested:,} requested bytes, "
            f"the trace at {tracker.peak.bytes:,}"
        )
    return replayed


@contextlib.contextmanager
def cuda_kernels() -> Any:
    """CPU runs (fake or real tensors) pick the kernels CUDA picks, for as long as this is entered.

    SDPA: CUDA's flash and memory-efficient kernels apply attention dropout inside the kernel and
    keep only q, k, v, the output, the fp32 logsumexp and an RNG seed/offset; the CPU flash
    kernel has no dropout, so with ``dropout_p > 0`` PyTorch on CPU falls back to the math path,
    which keeps b x heads x s x s probabilities and masks. Memory-wise the CUDA kernel with
    dropout is the CPU flash kernel without it, so that is what runs (GPT-2 trains with 0.1).

    Dropout: on CUDA ``F.dropout`` runs the fused ``native_dropout`` kernel, which keeps a 1-byte
    bool mask; on CPU it multiplies by a noise tensor in the input's dtype (2 bytes in bf16).
    Here ``native_dropout`` runs, as on CUDA.

    The two functions are swapped on ``torch.nn.functional`` itself (modelling code looks them up
    there at call time) rather than through a torch-function mode, because gradient
    checkpointing recomputes inside the autograd engine, where such modes are not active.
    """
    from unittest import mock

    import torch

    functional = torch.nn.functional
    sdpa = functional.scaled_dot_product_attention
    dropout = functional.dropout
    native_dropout = torch.ops.aten.native_dropout.default

    def sdpa_cuda(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 4:
            args = (*args[:4], 0.0, *args[5:])
        elif "dropout_p" in kwargs:
            kwargs["dropout_p"] = 0.0
        return sdpa(*args, **kwargs)

    def dropout_cuda(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if training and p > 0 and not inplace:
            return native_dropout(input, p, True)[0]
        return dropout(input, p, training, inplace)

    with (
        mock.patch.object(functional, "scaled_dot_product_attention", sdpa_cuda),
        mock.patch.object(functional, "dropout", dropout_cuda),
    ):
        yield


@contextlib.contextmanager
def _unpacked_batch() -> Any:
    """Answer transformers' packed-sequence check the way a real run answers it for our batch.

    With no attention mask, transformers reads the position ids to detect several sequences
    packed into one row (``masking_utils.find_packed_sequence_indices``); on real tensors it finds
    none and lets SDPA run causal without a mask. Fake tensors cannot be read, so transformers
    would assume packing and build an explicit b x s x s mask. Our batch is one sequence per row,
    so the trace gives the answer a real run computes: no packing.
    """
    from unittest import mock

    from transformers import masking_utils

    with mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None):
        yield


def register_static(tracker: Any, built: Built, spec: TrainSpec) -> None:
    """Give the tracker every tensor that exists before the step, with its category."""
    for tensor, category in built.static:
        tracker.register(tensor, category)
    if spec.method == "qlora" and spec.double_quant:
        from bitsandbytes import functional

        # the cached dynamic map each nested state copied; on a GPU it lives on the device too
        tracker.register(functional.name2qmap["dynamic"], "quant_state")


def _state_bytes(tracker: Any, hooks: Hooks) -> dict[str, int]:
    out = dict.fromkeys(("weights", "quant_state", "adapter"), 0)
    for block in tracker.blocks:
        if block.born < 0 and block.category in out:
            out[block.category] += block.size
    out["gradients"] = hooks.gradient_bytes
    out["optimizer"] = hooks.optimizer_bytes
    return out


def timeline_rows(tracker: Any) -> list[tuple[int, int, str, int]]:
    markers = list(tracker.markers)
    out = []
    phase, step, m = "setup", 0, 0
    for event, live in enumerate(tracker.live_per_event, start=1):
        while m < len(markers) and markers[m][0] <= event:
            _, phase, step = markers[m]
            m += 1
        out.append((event, live, phase, step))
    return out


def _compiling() -> bool:
    import torch

    return torch.compiler.is_compiling()


class Hooks:
    """Phase markers, the module stack, category tags and progress, wired into one run."""

    def __init__(
        self,
        built: Built,
        tracker: Any,
        optimizer: Any,
        paged: bool,
        steps: int,
        fake: bool,
        progress: Progress | None,
        sharded: bool = False,
    ):
        self.sharded = sharded
        self.built = built
        self.tracker = tracker
        self.optimizer = optimizer
        self.paged = paged
        self.progress = progress
        self.names = {id(m): name for name, m in built.model.named_modules()}
        self.steps = steps
        self.fake = fake
        self._ops_per_step = 0
        self._fwd_ops = 0
        self.gradient_bytes = 0
        self.optimizer_bytes = 0
        self._last_report = 0

    @contextlib.contextmanager
    def installed(self) -> Any:
        import torch

        head = self.built.output_head
        handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
            torch.nn.modules.module.register_module_forward_hook(self._post, always_call=True),
            head.register_forward_pre_hook(self._head),
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _head(self, *_: Any) -> None:
        """The output head starts the loss phase (an evaluation's head stays in its own phase)."""
        if self.tracker.phase != "evaluation":
            self.tracker.set_phase("loss")

    def _pre(self, module: Any, _args: Any) -> None:
        if _compiling():  # inside a compiled layer (--compile): no Python side effects to trace
            return
        name = self.names.get(id(module), type(module).__name__)
        self.tracker.module_stack.append(name)
        self.tracker.last_module = name
        self._report()

    def _post(self, _module: Any, _args: Any, _out: Any) -> None:
        if _compiling():
            return
        if self.tracker.module_stack:
            self.tracker.module_stack.pop()

    def on_phase(self, phase: str, step: int) -> None:
        t = self.tracker
        if phase == "forward" and step != t.step and t.step >= 1:
            self._ops_per_step = self._ops_per_step or t.ops
        if phase == "backward" and self.sharded:
            from lora_budget.runtime.fsdp import gathered_tensors

            # parameters FSDP2 gathered in the forward and keeps for backward (the root's) are
            # communication buffers, not activations
            for tensor in gathered_tensors(self.built.model):
                self.tracker.tag(tensor, "temporaries")
        if phase == "backward":
            # what the forward leaves alive is what backward needs: the activations
            for block in t.live_blocks():
                if not block.category and block.born >= 0 and block.phase in ("forward", "loss"):
                    block.category = "activations"
            if not self._fwd_ops:
                self._fwd_ops = t.ops
        t.stub_scalars = self.fake and phase in ("optimizer", "warm_start")
        t.set_phase(phase, step)
        self._report(force=True)

    def after_backward(self, _step: int) -> None:
        blocks = {}
        for p in self.built.trainable:
            if p.grad is not None:
                block = self.tracker.tag(p.grad, "gradients")
                if block is not None:
                    blocks[id(block)] = block.size
        self.gradient_bytes = sum(blocks.values())

    def after_step(self, _step: int) -> None:
        blocks = {}
        for key, t in optimizer_state_tensors(self.optimizer):
            paged = self.paged and key in ("state1", "state2") and t.numel() >= PAGE_MIN_NUMEL
            block = self.tracker.tag(t, "optimizer", pageable=paged)
            if block is not None:
                blocks[id(block)] = block.size
        self.optimizer_bytes = sum(blocks.values())

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        t = self.tracker
        if not force and t.ops - self._last_report < 2000:
            return
        self._last_report = t.ops
        per_step = self._ops_per_step or 3 * self._fwd_ops
        total = per_step * self.steps if per_step else 0
        self.progress(t.ops, total, f"step {t.step} {t.phase}")
