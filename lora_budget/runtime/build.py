"""Build the reference model of a spec with the real transformers, peft and bitsandbytes code.

One code path for the trace engine (meta device, then fake tensors) and the profiler (real
tensors on CPU or GPU), so that both run exactly the modules the planner describes:

1. ``AutoModelForCausalLM.from_config`` from the catalog's config.json values, in the spec's
   dtype, with the spec's attention implementation. Random weights, nothing downloaded.
2. QLoRA / 8-bit LoRA: every ``nn.Linear`` except the output head becomes a bitsandbytes
   ``Linear4bit`` (compute dtype = spec dtype, uint8 storage) or ``Linear8bitLt`` (int8 weights,
   threshold 6.0), as transformers' bitsandbytes integration does when loading a checkpoint.
3. With ``spec.kbit_prepared``, peft's ``prepare_model_for_kbit_training`` (fp32 non-quantized
   parameters), as the Trainer-based frameworks' QLoRA recipes run it.
4. peft ``LoraConfig`` on the spec's target modules and LoRA dropout, adapters in the spec's adapter
   dtype (peft's default keeps them in fp32).
5. Gradient checkpointing: transformers' ``gradient_checkpointing_enable`` with the
   non-reentrant implementation (its default).

peft moving adapters with ``.to()`` fails on fake parameters, so the fake path builds on ``meta``
first and then gives every parameter and buffer a fake tensor of its own shape and dtype;
4-bit weights are quantized by bitsandbytes' own ``quantize_4bit`` on a fake dense weight.
"""

from __future__ import annotations

from typing import Any

from lora_budget.core.lora import resolve_targets
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass
from lora_budget.runtime.text_tower import causal_lm_from_config
from lora_budget.spec import TrainSpec

INSTALL_HINT = "pip install 'lora-budget[torch]' (torch, transformers, peft, bitsandbytes)"
INT8_THRESHOLD = 6.0
"""transformers' ``BitsAndBytesConfig.llm_int8_threshold`` default."""


def import_stack(need_bnb: bool = False) -> tuple[Any, Any, Any, Any]:
    """torch, transformers, peft (and bitsandbytes), or an error that says how to install them."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise LoraBudgetError(f"this engine needs {exc.name}; install it with {INSTALL_HINT}") from None
    bnb = None
    if need_bnb:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise LoraBudgetError(f"QLoRA and 8-bit LoRA need bitsandbytes; install it with {INSTALL_HINT}") from None
    return torch, transformers, peft, bnb


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@dataclass(slots=True)
class Built:
    """The model ready to train, and the role of each of its tensors."""

    model: Any
    static: list[tuple[Any, str]]
    """(tensor, category) for every parameter, buffer and quantization-state tensor."""
    trainable: list[Any]
    output_head: Any
    """The module that produces the logits (``get_output_embeddings()``)."""


def cpu_autocast_differs(model: Any, config: dict[str, Any]) -> bool:
    """Whether CPU autocast on fake tensors would run ``model`` otherwise than CUDA's autocast: CPU's
    keeps layer_norm and pow in 16 bits where CUDA's runs them in fp32 (torch's autocast op lists),
    so a model with a LayerNorm module or a tanh GELU that calls pow (``gelu_new``, ``gelu_accurate``) is traced
    without autocast only. Read off the built modules and the config, not the analytical shape: a
    trace-derived model's shape does not know its norms."""
    import torch

    pow_gelu = ("NewGELUActivation", "AccurateGELUActivation")  # transformers' activations.py: torch.pow(x, 3)
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, torch.nn.LayerNorm) or "LayerNorm" in name or name in pow_gelu:
            return True
    acts = {str(config.get(k, "")) for k in ("hidden_act", "activation_function", "hidden_activation")}
    return bool(acts & {"gelu_new", "gelu_accurate"})  # an activation called as a function, not a module


def hf_config(spec: TrainSpec) -> Any:
    """The transformers config of the spec's model, with its attention implementation."""
    _, transformers, _, _ = import_stack()
    raw = dict(spec.model.config)
    if not raw:
        raise LoraBudgetError(f"{spec.model.name}: no config.json values to build the model from")
    model_type = raw.pop("model_type", spec.model.shape.model_type)
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "auto_map"):
        raw.pop(key, None)
    raw.pop("quantization_config", None)
    try:
        config = transformers.AutoConfig.for_model(model_type, **raw)
    except Exception as exc:  # transformers' config validators raise their own error classes
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise LoraBudgetError(f"transformers cannot build a {model_type!r} config: {first}") from None
    config._attn_implementation = {"flash": "flash_attention_2"}.get(spec.attn, spec.attn)
    config.use_cache = False
    if spec.objective == "reward":
        # TRL's RewardTrainer: one output (num_labels=1); the classifier pools at the last non-pad token
        config.num_labels = 1
        if config.pad_token_id is None:
            config.pad_token_id = 0
    return config


def build(
    spec: TrainSpec,
    *,
    device: str = "cpu",
    fake_mode: Any = None,
    seed: int = 0,
    weights: str | None = None,
    mesh: Any = None,
) -> Built:
    """The reference model of ``spec`` on ``device``; with ``fake_mode``, every tensor is fake.

    ``mesh``: for ``spec.gpus > 1`` (fake tensors only), the device mesh of a fake world
    (``runtime.fsdp.fake_world``); the model is sharded with FSDP2 after materialisation.

    ``weights``: a local folder of ``*.safetensors`` files to load instead of random weights
    (real tensors only; loaded before quantization, so QLoRA quantizes the real weights).
    """
    torch, transformers, _, _ = import_stack(need_bnb=spec.method in ("qlora", "lora8bit"))
    if spec.model.shape.is_moe and fake_mode is not None:
        raise LoraBudgetError(
            f"{spec.model.name}: MoE routing has data-dependent shapes that fake tensors cannot follow; "
            "`lora-budget plan` still answers for this model"
        )
    config = hf_config(spec)
    if spec.attn == "flash" and (fake_mode is not None or not str(device).startswith("cuda") or not _has_flash_attn()):
        # FlashAttention-2 keeps what SDPA's flash kernel keeps (q, k, v, output, fp32 logsumexp);
        # without the flash-attn package (or a GPU) that kernel stands in for it
        config._attn_implementation = "sdpa"
    dtype = torch_dtype(spec.dtype)
    torch.manual_seed(seed)
    try:
        with torch.device("meta" if fake_mode is not None else device):
            if spec.objective == "reward":
                model = transformers.AutoModelForSequenceClassification.from_config(config, dtype=dtype)
            else:  # a multimodal model's text tower where transformers has no causal LM for it (text_tower.py)
                model = causal_lm_from_config(transformers, config, dtype)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, LoraBudgetError) as exc:
        raise LoraBudgetError(
            f"transformers cannot build {spec.model.name} ({config.model_type}): {exc}; "
            "`lora-budget plan` still answers for it"
        ) from None
    if weights is not None:
        if fake_mode is not None:
            raise LoraBudgetError("local weights apply to real runs only, not to the fake-tensor trace")
        load_weights(model, weights)
    if spec.method in ("qlora", "lora8bit"):
        _replace_linears(model, spec, real_device=None if fake_mode is not None else device)
    if spec.kbit_prepared:
        _prepare_kbit(model, spec)
    if spec.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if spec.ckpt_offload and fake_mode is None:  # the trace installs its own movers (trace.engine)
            from lora_budget.runtime import offload

            offload.install(model, lambda x: x.to("cpu", non_blocking=True), lambda x: x.to(device, non_blocking=True))
    model = _apply_lora(model, spec)
    if fake_mode is not None:
        if spec.method in ("qlora", "lora8bit"):
            _prime_bnb_tables(device)
        with fake_mode:
            _materialize(model, spec, device)
            if spec.gpus > 1:
                from lora_budget.runtime.fsdp import shard

                if mesh is None:
                    raise LoraBudgetError("a sharded build needs the mesh of a (fake) process group")
                shard(model, spec, mesh)
    elif spec.gpus > 1:
        raise LoraBudgetError("multi-GPU specs are traced on fake tensors only (one rank of a fake world)")
    model.train()
    head = model.get_output_embeddings() if spec.objective != "reward" else _score(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Built(model=model, static=static_tensors(model), trainable=trainable, output_head=head)


def _score(model: Any) -> Any:
    """The sequence classifier's output head (``score``; peft wraps it in ``modules_to_save``)."""
    for name, module in model.named_modules():
        if name.endswith("score") and hasattr(module, "weight"):
            return module
    raise LoraBudgetError(f"{type(model).__name__} has no score head")


def build_reference(spec: TrainSpec, *, device: str = "cpu", fake_mode: Any = None) -> Any:
    """The frozen reference model TRL loads for full fine-tuning (``create_model_from_path`` with the
    policy's init kwargs): the same model in the same dtype, every parameter frozen, in eval mode
    (accelerate's ``prepare_model(..., evaluation_mode=True)``), without gradient checkpointing."""
    from lora_budget.records import replace

    ref_spec = replace(spec, objective="sft", reference="auto", grad_ckpt=False, completion_len=0)
    model = build(ref_spec, device=device, fake_mode=fake_mode).model
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


def load_weights(model: Any, folder: str) -> None:
    """Copy the tensors of every ``*.safetensors`` file in ``folder`` into ``model`` (shard by shard).

    Every parameter of the model must be found (tied weights count once); nothing is downloaded.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise LoraBudgetError(f"--weights {folder}: no *.safetensors files there")
    expected = {name for name, _ in model.named_parameters()}
    loaded: set[str] = set()
    for path in files:
        shard = load_file(str(path), device="cpu")  # copied into the model's tensors, no device scratch
        result = model.load_state_dict(shard, strict=False, assign=False)
        loaded |= set(shard) - set(result.unexpected_keys)
        del shard
    missing = sorted(expected - loaded)
    if missing:
        raise LoraBudgetError(
            f"--weights {folder}: {len(missing)} parameters not found in its safetensors files (first: {missing[0]})"
        )


def _has_flash_attn() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def _replace_linears(model: Any, spec: TrainSpec, real_device: str | None) -> None:
    """Swap every decoder ``nn.Linear`` for its bitsandbytes layer (lm_head stays 16-bit)."""
    import bitsandbytes as bnb
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if spec.objective != "reward" else _score(model)
    dtype = torch_dtype(spec.dtype)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            # isinstance, as transformers' bitsandbytes integration does: Falcon's FalconLinear
            # is an nn.Linear subclass; bitsandbytes' own layers are too, and are skipped
            if child is head or not isinstance(child, (torch.nn.Linear, Conv1D)):
                continue
            if isinstance(child, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                continue
            bias = child.bias is not None
            if isinstance(child, Conv1D):  # GPT-2 stores (in, out); transformers transposes it
                in_features, out_features = child.weight.shape
                dense = child.weight.data.t()
            else:
                in_features, out_features = child.in_features, child.out_features
                dense = child.weight.data
            if spec.method == "qlora":
                new = bnb.nn.Linear4bit(
                    in_features,
                    out_features,
                    bias=bias,
                    compute_dtype=dtype,
                    compress_statistics=spec.double_quant,
                    quant_type=spec.quant,
                    quant_storage=torch.uint8,
                    device="meta",
                )
            else:
                new = bnb.nn.Linear8bitLt(
                    in_features,
                    out_features,
                    bias=bias,
                    has_fp16_weights=False,
                    threshold=INT8_THRESHOLD,
                    device="meta",
                )
            if real_device is not None:
                _quantize_into(new, spec, dense, real_device)
                if bias:
                    new.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
            elif bias:
                new.bias = torch.nn.Parameter(torch.empty_like(child.bias), requires_grad=False)
            setattr(parent, name, new)


def _quantize_into(module: Any, spec: TrainSpec, dense: Any, device: str, fake: bool = False) -> None:
    """Quantize ``dense`` with bitsandbytes and install it as ``module.weight``.

    bitsandbytes' parameter classes cannot wrap a fake tensor (``_make_subclass``), so the fake
    path installs a plain parameter carrying the same attributes; bitsandbytes' layers read only
    those attributes (``quant_state``, ``CB``, ``SCB``) in forward and backward.
    """
    import bitsandbytes as bnb
    import torch

    if spec.method == "qlora":
        packed, state = bnb.functional.quantize_4bit(
            dense.contiguous().to(device),
            blocksize=spec.quant_blocksize,
            compress_statistics=spec.double_quant,
            quant_type=spec.quant,
            quant_storage=module.quant_storage,
        )
        attrs = dict(
            quant_state=state,
            blocksize=spec.quant_blocksize,
            compress_statistics=spec.double_quant,
            quant_type=spec.quant,
            quant_storage=module.quant_storage,
            bnb_quantized=True,
            module=module,
        )
        if fake:
            weight = torch.nn.Parameter(packed, requires_grad=False)
            for key, value in attrs.items():
                setattr(weight, key, value)
        else:
            weight = bnb.nn.Params4bit(packed, requires_grad=False, **attrs)
        module.weight = weight
        module.quant_state = state
    else:
        cb, scb, _ = bnb.functional.int8_vectorwise_quant(dense.contiguous().to(device=device, dtype=torch.float16))
        if fake:
            weight = torch.nn.Parameter(cb, requires_grad=False)
            weight.has_fp16_weights = False
        else:
            weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False)
        weight.CB = cb
        weight.SCB = scb
        module.weight = weight


def _prime_bnb_tables(device: str) -> None:
    """Build bitsandbytes' shared 256-entry dynamic map outside fake mode.

    ``create_dynamic_map`` calls ``.tolist()`` on a tensor, which fake tensors cannot answer; on a
    real device bitsandbytes caches the map once per process, so priming it changes nothing.
    """
    from bitsandbytes import functional

    if "dynamic" not in functional.name2qmap:
        functional.name2qmap["dynamic"] = functional.create_dynamic_map().to(device)


def _prepare_kbit(model: Any, spec: TrainSpec) -> None:
    """peft's own ``prepare_model_for_kbit_training`` on the quantized model (still on meta for the
    trace, so its fp32 casts change dtypes only): every fp16/bf16 parameter that is not a 4-bit
    weight becomes fp32. Its gradient checkpointing is the spec's, enabled as TRL's SFTTrainer asks
    for it (``use_gradient_checkpointing=args.gradient_checkpointing``); with the non-reentrant
    implementation peft registers no input-grad hook, and checkpointing makes the embedding
    output require grad itself."""
    import peft

    model.is_loaded_in_4bit = spec.method == "qlora"  # what transformers sets when it loads in 4/8 bit
    model.is_loaded_in_8bit = spec.method == "lora8bit"
    peft.prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=spec.grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        auto_clear_cache=False,
    )


def _apply_lora(model: Any, spec: TrainSpec) -> Any:
    if spec.method == "full":
        return model
    import peft

    targets = list(resolve_targets(spec.model.shape, spec.targets, spec.rank))
    config = peft.LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=targets,
        lora_dropout=spec.lora_dropout,
        bias="none",
        # TRL's reward examples adapt a sequence classifier (SEQ_CLS: peft also trains the score head)
        task_type="SEQ_CLS" if spec.objective == "reward" else "CAUSAL_LM",
        # GPT-2's Conv1D stores (in, out); under QLoRA it became a Linear4bit
        fan_in_fan_out=spec.model.shape.model_type == "gpt2" and spec.method == "lora",
    )
    try:
        model = peft.get_peft_model(model, config, autocast_adapter_dtype=spec.adapter_dtype == "fp32")
    except (ValueError, TypeError) as exc:
        raise LoraBudgetError(f"peft cannot adapt {spec.model.name} with targets {targets}: {exc}") from None
    dtype = torch_dtype(spec.adapter_dtype)
    for name, p in model.named_parameters():
        if "lora_" in name and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def _materialize(model: Any, spec: TrainSpec, device: str) -> None:
    """Give every meta parameter and buffer a fake tensor on ``device`` (inside a FakeTensorMode).

    Tied parameters (Gemma's or GPT-2's lm_head and embedding) stay one tensor.
    """
    import torch

    dense_dtype = torch_dtype(spec.dtype)
    done: dict[int, Any] = {}
    quantized: dict[tuple[int, int], Any] = {}
    """The first 4-bit weight of each shape, quantized by bitsandbytes; later ones copy its layout."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) in done:
                module._parameters[name] = done[id(p)]
                continue
            kind = type(p).__name__
            if kind in ("Params4bit", "Int8Params"):
                shape = (module.out_features, module.in_features)
                if spec.method == "qlora" and shape in quantized:
                    _like_quantized(module, quantized[shape])
                else:
                    dense = torch.empty(shape, dtype=dense_dtype, device=device)
                    _quantize_into(module, spec, dense, device, fake=True)
                    quantized[shape] = module.weight
                new = module.weight
            else:
                new = torch.nn.Parameter(
                    torch.empty(p.shape, dtype=p.dtype, device=device), requires_grad=p.requires_grad
                )
                module._parameters[name] = new
            done[id(p)] = new
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            if id(b) not in done:
                done[id(b)] = torch.empty(b.shape, dtype=b.dtype, device=device)
            module._buffers[name] = done[id(b)]


def _like_quantized(module: Any, template: Any) -> None:
    """Give ``module`` a 4-bit weight laid out like ``template``: new fake tensors of the same
    shapes and dtypes for the packed data and every quantization-state tensor (absmax, code,
    offset, nested absmax and code), exactly what ``quantize_4bit`` returns for that shape.
    On fake tensors only the layout exists, so quantizing each weight again would add nothing
    but time (about 10 ms per weight)."""
    import copy

    import torch

    def fresh(state: Any) -> Any:
        state = copy.copy(state)
        for key in ("absmax", "code", "offset"):
            value = getattr(state, key, None)
            if isinstance(value, torch.Tensor):
                setattr(state, key, torch.empty_like(value))
        if getattr(state, "state2", None) is not None:
            state.state2 = fresh(state.state2)
        return state

    state = fresh(template.quant_state)
    weight = torch.nn.Parameter(torch.empty_like(template), requires_grad=False)
    for key in ("blocksize", "compress_statistics", "quant_type", "quant_storage", "bnb_quantized"):
        setattr(weight, key, getattr(template, key))
    weight.quant_state = state
    weight.module = module
    module.weight = weight
    module.quant_state = state


def static_tensors(model: Any) -> list[tuple[Any, str]]:
    """(tensor, category) for the tensors that live for the whole run."""
    out: list[tuple[Any, str]] = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            out.append((p, "adapter"))
            continue
        out.append((p, "weights"))
        state = getattr(p, "quant_state", None)
        if state is not None:
            out.extend((t, "quant_state") for t in _quant_state_tensors(state))
        scb = getattr(p, "SCB", None)
        if scb is not None:
            out.append((scb, "quant_state"))
    for module in model.modules():
        # a sharded (FSDP2) weight no longer carries its quantization state; the module still does
        state = getattr(module, "quant_state", None)
        if state is not None and hasattr(state, "absmax"):
            out.extend((t, "quant_state") for t in _quant_state_tensors(state))
    out.extend((b, "weights") for b in model.buffers())
    return out


def _quant_state_tensors(state: Any) -> list[Any]:
    tensors = [state.absmax, state.code, getattr(state, "offset", None)]
    nested = getattr(state, "state2", None)
    if nested is not None:
        tensors += [nested.absmax, nested.code]
    return [t for t in tensors if t is not None and hasattr(t, "untyped_storage")]
