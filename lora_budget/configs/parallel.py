"""DeepSpeed and FSDP settings of a training config as ``--strategy`` / ``--offload``.

The world size is never in these files (the launcher decides it), so the mapped strategy only
applies once the user gives ``--gpus N`` (``lora_budget/cli/options.py``, ``apply_config``).

DeepSpeed (``deepspeed:`` in axolotl, LLaMA-Factory and transformers ``TrainingArguments``): a path
to a DeepSpeed JSON (looked up relative to the current directory, then to the config file's
folder) or, for transformers, the config itself as a dict. Keys and defaults as DeepSpeed's
``DeepSpeedZeroConfig`` (deepspeed/runtime/zero/config.py) documents them:

- ``zero_optimization.stage`` 0-3 (default 0): 0 -> ddp, 1/2/3 -> zero1/zero2/zero3.
- ``offload_optimizer.device`` cpu|nvme|none ("valid for ZeRO stage 1, 2, 3") -> ``--offload
  optimizer``; ``offload_param.device`` ("valid only with stage 3") -> ``--offload params``, which
  also moves the optimizer state, so ``offload_param`` alone is planned without offload (an upper
  bound). The deprecated ``cpu_offload: true`` means ``offload_optimizer: {device: cpu}``.
- Buckets: DeepSpeed's defaults are reduce_bucket_size 5e8, allgather_bucket_size 5e8,
  (stage3_)prefetch_bucket_size 5e7, (stage3_)param_persistence_threshold 1e5,
  (stage3_)max_live_parameters 1e9, (stage3_)max_reuse_distance 1e9, sub_group_size 1e9; the planner
  (``core/sharding.py``) assumes the defaults, so other values (and ``auto``, which transformers
  fills from the model's hidden_size: integrations/deepspeed.py) are reported as not modelled.
- ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps``, ``bf16.enabled``,
  ``fp16.enabled``: used when concrete (not ``auto``) and the main file does not set the same thing;
  transformers refuses a DeepSpeed value that contradicts its own argument (``fill_match``), so a
  contradiction is a note and the main file's value is planned.

A missing DeepSpeed JSON whose name is one of the examples the tools ship is read from its name
(the table below, each entry checked against the shipped file); any other missing file is a note.

FSDP: transformers ``fsdp`` is a string or list of ``FSDPOption`` tokens (full_shard,
shard_grad_op, no_shard, hybrid_shard, hybrid_shard_zero2, offload, auto_wrap; trainer_utils.py)
or ``true``; ``fsdp_config`` is a dict or a path to a JSON file, its keys with or without the
``fsdp_`` prefix (transformers strips it). transformers 5 (``_apply_legacy_fsdp_to_config``) turns
full_shard / shard_grad_op into FSDP2 ``reshard_after_forward`` true / false and ``offload`` into
``cpu_offload``. axolotl (docs/multi-gpu.qmd, utils/schemas/fsdp.py) takes ``fsdp:`` as a list of
the same tokens (FSDP1, deprecated) and ``fsdp_config`` with ``fsdp_offload_params`` /
``fsdp_sharding_strategy`` (FSDP1) or ``offload_params`` / ``reshard_after_forward`` (FSDP2,
``fsdp_version: 2``, top level or inside ``fsdp_config``); an ``fsdp_config`` alone turns FSDP on.
accelerate's ``fsdp_sharding_strategy`` also accepts 1-5 (FULL_SHARD, SHARD_GRAD_OP, NO_SHARD,
HYBRID_SHARD, HYBRID_SHARD_ZERO2: utils/constants.py). The sharding strategy from ``fsdp_config``
wins over the ``fsdp`` tokens, as in transformers (``setdefault``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_budget.configs.nested import check_deepspeed, check_fsdp
from lora_budget.configs.values import Reader
from lora_budget.errors import LoraBudgetError
from lora_budget.loads import InputFileError, read_json

Fail = Callable[[str, str], LoraBudgetError]

STAGE_STRATEGY = {0: "ddp", 1: "zero1", 2: "zero2", 3: "zero3"}

SHIPPED_DEEPSPEED: dict[str, tuple[int, bool, bool, str]] = {
    # file name: (stage, offload_optimizer, offload_param, where it ships)
    "ds_z0_config.json": (0, False, False, "LLaMA-Factory examples/deepspeed"),
    "ds_z2_config.json": (2, False, False, "LLaMA-Factory examples/deepspeed"),
    "ds_z2_offload_config.json": (2, True, False, "LLaMA-Factory examples/deepspeed"),
    "ds_z3_config.json": (3, False, False, "LLaMA-Factory examples/deepspeed"),
    "ds_z3_offload_config.json": (3, True, True, "LLaMA-Factory examples/deepspeed"),
    "ds_z3_partial_offload_config.json": (3, True, False, "LLaMA-Factory examples/deepspeed"),
    "zero1.json": (1, False, False, "axolotl deepspeed_configs"),
    "zero1_torch_compile.json": (1, False, False, "axolotl deepspeed_configs"),
    "zero2.json": (2, True, False, "axolotl deepspeed_configs"),
    "zero2_torch_compile.json": (2, True, False, "axolotl deepspeed_configs"),
    "zero3.json": (3, False, False, "axolotl deepspeed_configs"),
    "zero3_bf16.json": (3, False, False, "axolotl deepspeed_configs"),
    "zero3_cpuoffload.json": (3, True, True, "axolotl deepspeed_configs"),
    "zero3_bf16_cpuoffload_all.json": (3, True, True, "axolotl deepspeed_configs"),
    "zero3_bf16_cpuoffload_params.json": (3, False, True, "axolotl deepspeed_configs"),
}
"""DeepSpeed JSONs the tools ship, read from the files themselves (hiyouga/LLaMA-Factory
examples/deepspeed/, axolotl-ai-cloud/axolotl deepspeed_configs/; axolotl's zero2.json does offload
the optimizer to the CPU)."""

BUCKET_DEFAULTS: dict[tuple[str, ...], tuple[int, tuple[int, ...]]] = {
    # accepted names: (DeepSpeed default in elements, the stages it applies to)
    ("reduce_bucket_size",): (500_000_000, (1, 2, 3)),
    ("allgather_bucket_size",): (500_000_000, (1, 2)),
    ("stage3_prefetch_bucket_size", "prefetch_bucket_size"): (50_000_000, (3,)),
    ("stage3_param_persistence_threshold", "param_persistence_threshold"): (100_000, (3,)),
    ("stage3_max_live_parameters", "max_live_parameters"): (1_000_000_000, (3,)),
    ("stage3_max_reuse_distance", "max_reuse_distance"): (1_000_000_000, (3,)),
    ("sub_group_size",): (1_000_000_000, (3,)),
}

FSDP_TOKENS = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2", "offload", "auto_wrap")
_SHARDING = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2")  # accelerate's 1-5


def read_parallel(r: Reader) -> str:
    """Map ``deepspeed`` / ``fsdp`` / ``fsdp_config`` onto ``strategy`` and ``offload``.

    Returns a short description of what was read (empty when neither is set), for the note that
    asks for ``--gpus``.
    """
    ds = r.raw("deepspeed")
    fsdp_on = _fsdp_enabled(r)
    if ds not in (None, "", False, {}) and fsdp_on:
        raise r.fail("fsdp", "deepspeed and fsdp are both set; a run uses one of them")
    if ds not in (None, "", False, {}):
        return _deepspeed(r, ds)
    if fsdp_on:
        return _fsdp(r)
    return ""


# --- DeepSpeed ------------------------------------------------------------------------------------


def _deepspeed(r: Reader, value: Any) -> str:
    if isinstance(value, dict):
        return _from_ds_dict(r, value, "the inline deepspeed dict", "deepspeed: ")
    if not isinstance(value, str):
        raise r.fail("deepspeed", f"must be a path to a DeepSpeed JSON file or a dict, got {value!r}")
    given = Path(value.strip()).expanduser()
    candidates = [given] if given.is_absolute() else [given, r.path.parent / given]
    found = next((p for p in candidates if p.is_file()), None)
    if found is not None:
        try:
            data = read_json(found)
        except InputFileError as exc:
            raise r.fail("deepspeed", str(exc)) from None
        if not isinstance(data, dict):
            raise r.fail("deepspeed", f"{found}: expected a JSON object at the top level")
        return _from_ds_dict(r, data, found.name, f"deepspeed: {found}: ")
    looked = "it is an absolute path" if given.is_absolute() else f"looked in . and in {r.path.parent}"
    shipped = SHIPPED_DEEPSPEED.get(given.name)
    if shipped is None:
        r.notes.append(
            f"deepspeed: {value} not found ({looked}) and its name is not one of the DeepSpeed "
            "files axolotl or LLaMA-Factory ship: the DeepSpeed settings could not be read and were ignored"
        )
        return ""
    stage, opt, param, where = shipped
    r.notes.append(
        f"deepspeed: {value} not found ({looked}); stage and offload taken from its name, as {where}/"
        f"{given.name} sets them"
    )
    return _set_zero(r, stage, opt, param, f"the name {given.name}", f"deepspeed ({given.name}, by name)")


def deepspeed_file(r: Reader) -> str:
    """A DeepSpeed JSON given as the config itself (its keys are classified by ``nested.check_deepspeed``)."""
    r.used.update(r.data)
    r.notes.append("a DeepSpeed JSON does not name the model or the method: --model and --method decide")
    return _from_ds_dict(r, r.data, r.path.name, "")


def _from_ds_dict(r: Reader, data: dict[str, Any], label: str, where: str) -> str:
    """``where`` prefixes error keys: ``deepspeed: FILE: `` for a file the config names, empty for the config itself."""

    def fail(key: str, why: str) -> LoraBudgetError:
        return LoraBudgetError(f"{r.path}: {where}{key}: {why}")

    zero = data.get("zero_optimization", {})
    if zero is None:
        zero = {}
    if not isinstance(zero, dict):
        raise fail("zero_optimization", f"must be an object, got {zero!r}")
    stage = zero.get("stage", 0)
    if isinstance(stage, str) and stage.strip().isdigit():
        stage = int(stage)
    if isinstance(stage, bool) or not isinstance(stage, int) or stage not in STAGE_STRATEGY:
        raise fail("zero_optimization.stage", f"must be 0, 1, 2 or 3, got {stage!r}")
    opt = _device(zero, "offload_optimizer", fail, r)
    if zero.get("cpu_offload") is True:  # deprecated spelling of offload_optimizer: {device: cpu}
        opt = True
    param = _device(zero, "offload_param", fail, r)
    if zero.get("cpu_offload_param") is True:
        param = True
    _buckets(r, zero, stage, label)
    _ds_extras(r, data, label, fail)
    check_deepspeed(r, data, f"deepspeed: {label}: ")
    return _set_zero(r, stage, opt, param, label, f"deepspeed ({label})")


def _device(zero: dict[str, Any], key: str, fail: Fail, r: Reader) -> bool:
    block = zero.get(key)
    if block is None:
        return False
    if not isinstance(block, dict):
        raise fail(f"zero_optimization.{key}", f"must be an object with a device, got {block!r}")
    device = block.get("device", "none")
    if device is None:
        return False
    if not isinstance(device, str) or device.lower() not in ("cpu", "nvme", "none"):
        raise fail(f"zero_optimization.{key}.device", f"must be cpu, nvme or none, got {device!r}")
    if device.lower() == "nvme":
        r.notes.append(f"deepspeed: {key} to nvme planned as CPU offload (the same bytes leave the GPU)")
    return device.lower() != "none"


def _set_zero(r: Reader, stage: int, opt: bool, param: bool, label: str, source: str) -> str:
    strategy = STAGE_STRATEGY[stage]
    if param and stage != 3:
        r.notes.append(f"deepspeed: offload_param applies to ZeRO-3 only; ignored at stage {stage}")
        param = False
    if opt and stage == 0:
        r.notes.append("deepspeed: offload_optimizer needs ZeRO stage 1-3; ignored at stage 0")
        opt = False
    if param and not opt:
        r.notes.append(
            "deepspeed: offload_param without offload_optimizer is not modelled (--offload params also moves "
            "the optimizer state): planned with everything on the GPU, an upper bound"
        )
        param = False
    offload = "params" if param else "optimizer" if opt else "none"
    r.set("strategy", strategy, source)
    if offload != "none":
        r.set("offload", offload, source)
    what = {"none": "", "optimizer": " with optimizer offload", "params": " with optimizer and parameter offload"}
    kind = f"ZeRO-{stage}" if stage else "ZeRO stage 0 (plain data parallel)"
    return f"deepspeed: {kind}{what[offload]} read from {label}"


def _buckets(r: Reader, zero: dict[str, Any], stage: int, label: str) -> None:
    auto, other = [], []
    for names, (default, stages) in BUCKET_DEFAULTS.items():
        for name in names:
            v = zero.get(name)
            if stage not in stages or v is None:
                continue
            if isinstance(v, str) and v.strip().lower() == "auto":
                auto.append(name)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and v != default:
                other.append(f"{name} {v:g} (default {default:g})")
    if auto:
        other.append(
            f"{', '.join(auto)} auto (transformers derives {'it' if len(auto) == 1 else 'them'} from hidden_size)"
        )
    if other:
        r.notes.append(f"deepspeed: {label} sets {'; '.join(other)}: not modelled, planned with DeepSpeed's defaults")


def _ds_extras(r: Reader, data: dict[str, Any], label: str, fail: Fail) -> None:
    """Micro-batch, accumulation and precision from the DeepSpeed file when concrete and not set already."""
    for ds_key, param in (
        ("train_micro_batch_size_per_gpu", "batch_size"),
        ("gradient_accumulation_steps", "grad_accum"),
    ):
        v = data.get(ds_key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            continue  # "auto" (filled from the training arguments), absent or not a count
        value = str(v) if param == "batch_size" else v
        if param not in r.values:
            r.set(param, value, f"deepspeed ({label}): {ds_key}")
        elif str(r.values[param]) != str(v):
            r.notes.append(
                f"deepspeed: {label} sets {ds_key} {v} but {r.sources[param]} says {r.values[param]}; "
                f"planned with {r.values[param]} (transformers refuses the mismatch)"
            )
    enabled = {}
    for name in ("bf16", "fp16"):
        block = data.get(name)
        if isinstance(block, dict) and isinstance(block.get("enabled"), bool):
            enabled[name] = block["enabled"]
    on = [name for name, v in enabled.items() if v]
    if len(on) == 2:
        raise fail("bf16.enabled", "bf16.enabled and fp16.enabled are both true; choose one")
    if on:
        if "dtype" not in r.values:
            r.set("dtype", on[0], f"deepspeed ({label}): {on[0]}.enabled")
        elif r.values["dtype"] != on[0]:
            r.notes.append(
                f"deepspeed: {label} enables {on[0]} but {r.sources['dtype']} says {r.values['dtype']}; "
                f"planned with {r.values['dtype']}"
            )


# --- FSDP -----------------------------------------------------------------------------------------


def _fsdp_enabled(r: Reader) -> bool:
    fsdp = r.raw("fsdp")
    cfg = r.raw("fsdp_config")
    r.used.add("fsdp_version")
    if fsdp not in (None, "", False, []):
        return True
    if cfg not in (None, "", {}):
        if r.fmt == "axolotl":
            return True  # axolotl: fsdp_config alone configures FSDP (fsdp: is deprecated)
        r.notes.append("fsdp_config without fsdp: transformers uses fsdp_config only when fsdp is set; ignored")
    return False


def _fsdp_config(r: Reader) -> dict[str, Any]:
    cfg = r.data.get("fsdp_config")
    if cfg in (None, ""):
        return {}
    if isinstance(cfg, str):
        given = Path(cfg.strip()).expanduser()
        found = next((p for p in (given, r.path.parent / given) if p.is_file()), None)
        if found is None:
            r.notes.append(f"fsdp_config: {cfg} not found; planned with FSDP's defaults (FULL_SHARD, no offload)")
            return {}
        try:
            cfg = read_json(found)
        except InputFileError as exc:
            raise r.fail("fsdp_config", str(exc)) from None
    if not isinstance(cfg, dict):
        raise r.fail("fsdp_config", f"must be a mapping or a path to a JSON file, got {cfg!r}")
    return {(k[5:] if isinstance(k, str) and k.startswith("fsdp_") else k): v for k, v in cfg.items()}


def _truth(r: Reader, key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise r.fail(key, f"must be true or false, got {v!r}")


def _fsdp(r: Reader) -> str:
    fsdp = r.data.get("fsdp")
    if fsdp is True:
        tokens: list[str] = []
    elif isinstance(fsdp, str):
        tokens = fsdp.lower().split()
    elif isinstance(fsdp, list) and all(isinstance(t, str) for t in fsdp):
        tokens = [t.strip().lower() for t in fsdp]
    elif fsdp in (None, False, "", []):
        tokens = []
    else:
        raise r.fail("fsdp", f"must be a string or list of {', '.join(FSDP_TOKENS)}, got {fsdp!r}")
    if bad := [t for t in tokens if t not in FSDP_TOKENS]:
        raise r.fail("fsdp", f"unknown option {bad[0]!r}; use {', '.join(FSDP_TOKENS)}")
    cfg = _fsdp_config(r)
    check_fsdp(r, cfg)
    strategy_token, source = next((t for t in tokens if t in _SHARDING), None), "fsdp"
    if "sharding_strategy" in cfg:
        v = cfg["sharding_strategy"]
        text = "" if isinstance(v, bool) else str(v).strip().lower()
        if text.isdigit() and 1 <= int(text) <= len(_SHARDING):
            strategy_token = _SHARDING[int(text) - 1]
        elif text in _SHARDING:
            strategy_token = text
        else:
            names = ", ".join(s.upper() for s in _SHARDING)
            raise r.fail("fsdp_config", f"sharding_strategy must be one of {names} (or 1-5), got {v!r}")
        source = "fsdp_config.sharding_strategy"
    elif "reshard_after_forward" in cfg:
        v = cfg["reshard_after_forward"]
        if isinstance(v, str) and v.strip().lower() in _SHARDING:  # FSDP1 via accelerate: a strategy name
            strategy_token = v.strip().lower()
        else:
            strategy_token = "full_shard" if _truth(r, "fsdp_config", v) else "shard_grad_op"
        source = "fsdp_config.reshard_after_forward"
    strategy_token = strategy_token or "full_shard"  # transformers' and accelerate's default
    offload, offload_source = "offload" in tokens, "fsdp"
    for key in ("offload_params", "cpu_offload"):
        if key in cfg:
            offload, offload_source = _truth(r, "fsdp_config", cfg[key]), f"fsdp_config.{key}"
    strategy = {"full_shard": "fsdp", "hybrid_shard": "fsdp", "no_shard": "ddp"}.get(strategy_token, "zero2")
    if strategy_token in ("shard_grad_op", "hybrid_shard_zero2"):
        r.notes.append(
            "FSDP SHARD_GRAD_OP keeps whole parameters through forward and backward like ZeRO-2: planned as zero2"
        )
    if strategy_token.startswith("hybrid"):
        r.notes.append(
            "FSDP HYBRID_SHARD shards within a node and replicates across nodes: set --gpus to the GPUs per node"
        )
    if offload and strategy != "fsdp":
        r.notes.append(
            f"FSDP offload with {strategy_token.upper()} is not modelled: planned without offload, an upper bound"
        )
        offload = False
    version = cfg.get("version", r.data.get("fsdp_version"))
    if str(version) == "1" and strategy == "fsdp":
        r.notes.append("FSDP1 (flat parameters) planned as FSDP2's per-parameter shards")
    if "activation_checkpointing" in cfg and _truth(r, "fsdp_config", cfg["activation_checkpointing"]):
        r.set("grad_ckpt", True, "fsdp_config.activation_checkpointing")
    r.set("strategy", strategy, source)
    if offload:
        r.set("offload", "params", offload_source)
    return f"fsdp: {strategy_token.upper()}{' with parameter offload' if offload else ''} read from {source}"
