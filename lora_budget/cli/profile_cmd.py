"""``lora-budget profile``, ``profiles`` and ``calibrate``: real steps, the profile store, the fit."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import CONFIG_HELP, MAX_REAL_STEP, MODEL_HELP, check_real_step, config_model, typed
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import ATTENTIONS, DTYPES, METHODS, OPTIMIZERS

DEFAULT_ROOT = Path("profiles")


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of integers", param_hint=name) from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"{text!r}: give positive integers, e.g. 512,2048", param_hint=name)
    if max(values) > MAX_REAL_STEP:  # a real step this size allocates forever or overflows int64 shapes
        check_real_step(*((max(values), 1) if name == "--batch-size" else (1, max(values))))
    return sorted(set(values))


def _methods(text: str) -> list[str]:
    methods = ["full", "lora", "qlora"] if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise click.BadParameter(
            f"unknown {bad or text!r}; choose from {', '.join(METHODS)} or all", param_hint="--methods"
        )
    return methods


def _tokens(data: Path | None, tokenizer: Path | None, count: int, vocab: int) -> tuple[list[int] | None, str]:
    """Token ids from ``--data`` (local tokenizer, else one id per byte), and how they were made."""
    if data is None:
        return None, "synthetic (repeated pattern)"
    if data.exists() and not data.is_file():  # a FIFO waits for a writer and /dev/zero never ends: files only
        raise LoraBudgetError(f"--data {data}: cannot read it (not a regular file: a folder, FIFO or device)")
    try:
        with open(data, "rb") as fh:  # the first bytes suffice: at most 16 characters per token are used
            text = fh.read(count * 64).decode("utf-8", errors="replace")
    except OSError as exc:
        raise LoraBudgetError(f"--data {data}: cannot read it ({exc})") from None
    if not text.strip():
        raise LoraBudgetError(f"--data {data}: the file is empty")
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise LoraBudgetError(f"--tokenizer {tokenizer}: no local tokenizer there ({exc})") from None
        ids = tok(text[: count * 16], add_special_tokens=False)["input_ids"]
        how = f"{data} tokenized by {tokenizer}"
    else:
        ids = list(text.encode()[: count * 4])
        how = f"{data} as byte-level ids"
    if not ids:
        raise LoraBudgetError(f"--data {data}: no tokens")
    if max(ids) >= vocab:
        if tokenizer is not None:
            raise LoraBudgetError(
                f"--tokenizer {tokenizer} makes ids up to {max(ids)}, beyond the model's vocab {vocab}"
            )
        ids = [i % vocab for i in ids]
        how += f" (mod vocab {vocab})"
    return ids[:count], how


# config values the profile grid takes as they are, besides its own options
_CONFIG_EXTRA = ("alpha", "quant", "double_quant", "adapter_dtype", "master_weights")
_CONFIG_UNUSED = {
    "epochs": "a profile runs a few steps",
    "total_tokens": "a profile runs a few steps",
    "gpus": "a profile runs on one device",
    "strategy": "a profile runs on one device",
    "offload": "a profile runs on one device",
}


def _apply_config(path: str, model: str | None, kw: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Fill ``kw`` (and the model) from a training config where the user typed nothing; typed flags win.

    Returns (model, spec settings the grid takes beyond the profile's own options). The file's
    notes go to stderr, as ``plan`` prints them.
    """
    from lora_budget.configs import load_config

    as_option = {
        "method": ("methods", str),
        "seq_len": ("seq_len", str),
        "batch_size": ("batch_size", str),
        "grad_ckpt": ("grad_ckpt", lambda on: "on" if on else "off"),
    }
    # typed flags replace the file's values before they are validated, as plan's --config does
    given = {param for param, (option, _) in as_option.items() if option in kw and typed(option)}
    given |= {param for param in kw if typed(param)}  # the spec options profile shares with plan
    if model is not None:
        given.add("model")
    loaded = load_config(path, typed=frozenset(given))
    if model is None and kw.get("weights") is None:
        loaded.check_model()  # a file naming no model is refused unless --model (or --weights) says it
    extra: dict[str, Any] = {}
    overridden, unused = [], []
    for param, value in loaded.values.items():
        if param == "model":
            if model is None:
                model = config_model(loaded)
            else:
                overridden.append("model")
        elif param in _CONFIG_EXTRA:
            extra[param] = value
        elif param in _CONFIG_UNUSED:
            unused.append(f"{loaded.sources[param]} ({_CONFIG_UNUSED[param]})")
        elif param == "attn" and value == "flash":
            unused.append(f"{loaded.sources[param]} (profiled with --attn sdpa: flash-attn is not run here)")
        else:
            option, convert = as_option.get(param, (param, lambda v: v))
            if option not in kw:
                unused.append(loaded.sources[param])
            elif typed(option):
                overridden.append(param)
            else:
                kw[option] = convert(value)
    overridden += [p for p in loaded.skipped if p not in overridden]  # file keys a typed flag replaced unread
    if model is not None and "targets" in kw and "targets" in loaded.values and not typed("targets"):
        from lora_budget.configs.targets import fit_to_model, peft_default

        if loaded.pattern_targets:  # a pattern adapts only the modules the model has
            kw["targets"] = fit_to_model(kw["targets"], model)
        if loaded.default_targets:  # PEFT's default targets depend on the model type
            kw["targets"] = peft_default(kw["targets"], model)
    for line in loaded.describe(tuple(overridden)):
        click.echo(line, err=True)
    if unused:
        click.echo("config: not used by profile: " + "; ".join(unused), err=True)
    return model, extra


def _progress(index: int, total: int, label: str, row: dict[str, Any] | None, started: list[float]) -> None:
    if row is None:
        started[0] = time.perf_counter()
        click.echo(f"[{index + 1}/{total}] {label} ...", err=True)
        return
    took = time.perf_counter() - started[0]
    if row["status"] == "ok":
        what = f"ok, peak {row['peak_allocated_bytes']:,} B, {row['step_s']:.3f} s/step"
    elif row["status"] == "oom":
        what = "does not fit (out of memory)"
    else:
        what = f"error: {row['error']}"
    left = total - index - 1
    click.echo(f"[{index + 1}/{total}] {label}: {what} ({took:.1f} s; {left} left)", err=True)


@click.command("profile")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.option("--model", "-m", help=MODEL_HELP)
@click.option("--methods", default="full,lora,qlora", show_default=True, help="Comma list of methods, or all.")
@click.option("--seq-len", "-s", default="512,2048", show_default=True, help="Comma list of sequence lengths.")
@click.option("--batch-size", "-b", default="1,4", show_default=True, help="Comma list of micro-batch sizes.")
@click.option("--grad-ckpt", type=click.Choice(["off", "on", "both"]), default="off", show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="Measured steps per configuration.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Warm-up steps before measuring.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="Store folder (file goes to <out>/<device>/<model>-<time>.json) or a new .json path.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path, file_okay=False),
    help="Local model folder with *.safetensors to load instead of random weights (also the default --model).",
)
@click.option("--data", type=click.Path(path_type=Path), help="Text file to train on instead of synthetic tokens.")
@click.option("--tokenizer", type=click.Path(path_type=Path), help="Local tokenizer folder for --data (else bytes).")
@click.option("--snapshot", is_flag=True, help="CUDA: save a memory snapshot of one measured step per configuration.")
@click.option("--rank", "-r", type=int, default=16, show_default=True, help="LoRA rank.")
@click.option("--targets", default="all-linear", show_default=True, help="LoRA targets.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="bf16", show_default=True)
@click.option("--attn", type=click.Choice([a for a in ATTENTIONS if a != "flash"]), default="sdpa", show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate (no effect on memory).")
@click.option("--list", "list_only", is_flag=True, help="Summarize the stored profiles instead (as `profiles`).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile JSON instead of the table.")
@user_errors
def profile_cmd(model: str | None, list_only: bool, as_json: bool, config_file: str | None, **kw: Any) -> None:
    """Run real training steps per configuration and store what they used.

    Each configuration (methods x grad-ckpt x seq-len x batch-size) runs in a fresh process:
    warm-up steps, then measured steps. An out-of-memory configuration is recorded as
    "does not fit"; Ctrl-C stops and saves the rows finished so far. Random weights from the
    config; nothing is downloaded.

    \b
    Examples:
      lora-budget profile -m 8b --methods lora,qlora --seq-len 512,2048 --batch-size 1,4
      lora-budget profile -m 7b --grad-ckpt both --snapshot
      lora-budget profile -m tests/data/tiny-llama/config.json --device cpu -s 64 -b 1,2
      lora-budget profile --weights ./my-model --data train.txt -s 1024 -b 1,2
      lora-budget profile --config axolotl.yml -s 1024,4096 --device cuda
      lora-budget profile --list
    """
    if list_only:
        _list([DEFAULT_ROOT] if kw["out"] == DEFAULT_ROOT else [kw["out"]], as_json=as_json, show_rows=False)
        return
    if config_file is not None:
        model, extra = _apply_config(config_file, model, kw)
        kw["extra"] = extra
    if not model and kw["weights"] is not None:
        model = str(kw["weights"])
    if not model:
        raise click.UsageError("give --model (a catalog name, config.json path or model folder)")
    _profile(model, as_json, **kw)


def _profile(model: str, as_json: bool, **kw: Any) -> None:

    from lora_budget.catalog.models import resolve_model
    from lora_budget.profile.measure import Settings
    from lora_budget.profile.sweep import grid

    ref = resolve_model(model)
    weights = kw["weights"]
    if weights is not None and not weights.is_dir():
        raise LoraBudgetError(f"--weights {weights}: no such folder")
    settings = Settings(
        device=kw["device"],
        steps=kw["steps"],
        warmup=kw["warmup"],
        lr=kw["lr"],
        weights=str(weights.resolve()) if weights is not None else None,
    )
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[kw["grad_ckpt"]]
    specs = grid(
        ref,
        _methods(kw["methods"]),
        _ints(kw["seq_len"], "--seq-len"),
        _ints(kw["batch_size"], "--batch-size"),
        ckpts,
        rank=kw["rank"],
        targets=kw["targets"],
        optimizer=kw["optimizer"],
        dtype=kw["dtype"],
        attn=kw["attn"],
        grad_accum=kw["grad_accum"],
        **kw.get("extra", {}),
    )
    out: Path = kw["out"]
    if out.suffix == ".json" and out.exists():
        raise LoraBudgetError(f"{out} already exists; profiles are never overwritten (choose another --out)")
    claimed = None
    if out.suffix == ".json":  # claimed now (O_EXCL): a second sweep to the same path fails before measuring
        from lora_budget.fsio import claim_new

        claimed = claim_new(out)
    else:  # a folder: vetted now, so an unwritable one fails before measuring
        from lora_budget.fsio import check_folder

        check_folder(out)
    try:
        _measure_and_save(model, as_json, out, claimed, specs, settings, ref, weights, kw)
    finally:
        if claimed is not None and claimed.exists() and claimed.stat().st_size == 0:
            claimed.unlink()


def _measure_and_save(
    model: str,
    as_json: bool,
    out: Path,
    claimed: Path | None,
    specs: Any,
    settings: Any,
    ref: Any,
    weights: Any,
    kw: dict[str, Any],
) -> None:
    from lora_budget import records
    from lora_budget.cli.profile_render import render_profile
    from lora_budget.profile import store
    from lora_budget.profile.specio import model_to_dict
    from lora_budget.profile.sweep import environment_of, run_sweep

    count = max(s.batch_size * s.seq_len for s in specs)
    tokenizer = kw["tokenizer"]
    if (
        tokenizer is None
        and weights is not None
        and any((weights / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    ):
        tokenizer = weights
    tokens, data_how = _tokens(kw["data"], tokenizer, count, ref.shape.vocab)
    click.echo(f"reading the {settings.device} environment ...", err=True)
    env = environment_of(settings.device)
    if settings.device == "cuda" and not env.get("gpu_name"):
        raise LoraBudgetError("--device cuda: PyTorch sees no CUDA device here; use --device cpu")
    created = store.now_utc()
    draft = store.Profile(
        environment=env,
        model=model_to_dict(ref),
        settings={**records.asdict(settings), "data": data_how},
        rows=[],
        created_utc=created,
        planned=len(specs),
    )
    path = out if out.suffix == ".json" else store.default_path(out, draft)
    snapshot_dir = None
    if kw["snapshot"]:
        if settings.device == "cuda":
            snapshot_dir = path.with_name(path.stem + "-snapshots")
            snapshot_dir.mkdir(parents=True, exist_ok=True)
        else:
            click.echo(
                "note: --snapshot is unavailable on CPU: PyTorch memory snapshots record the CUDA caching "
                "allocator; profiling without it",
                err=True,
            )
    started = [0.0]
    result = run_sweep(
        specs,
        settings,
        tokens=tokens,
        snapshot_dir=snapshot_dir,
        progress=lambda i, n, label, row: _progress(i, n, label, row, started),
    )
    if not result.rows:
        raise click.ClickException("interrupted before any configuration finished; nothing saved")
    profile = records.replace(
        draft, environment=result.environment or env, rows=result.rows, interrupted=result.interrupted
    )
    if claimed is not None and claimed.stat().st_size == 0:
        claimed.unlink()  # our own empty claim; save links the finished file in its place
    saved = store.save(profile, path, unique=out.suffix != ".json")
    profile = records.replace(profile, path=saved)
    if as_json:
        click.echo(json.dumps(profile.to_dict(), indent=1))
    else:
        click.echo(render_profile(profile))
    click.echo(f"saved {saved}", err=True)
    if result.interrupted:
        sys.exit(130)


def _list(paths: list[Path], *, as_json: bool, show_rows: bool) -> None:
    from lora_budget.cli.profile_render import render_profile, render_store
    from lora_budget.profile.store import load_profiles

    if not paths:
        paths = [DEFAULT_ROOT]
    profiles, errors = load_profiles(paths)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "profiles": [{"path": str(p.path), **p.to_dict()} for p in profiles],
                    "errors": [{"path": str(e.path), "message": e.message} for e in errors],
                },
                indent=1,
            )
        )
    elif show_rows:
        click.echo("\n\n".join(render_profile(p) for p in profiles) or "no profiles")
    else:
        click.echo(render_store(profiles) if profiles else f"no profiles under {', '.join(map(str, paths))}")
    for e in errors:
        click.echo(f"error: {e}", err=True)
    if errors:
        sys.exit(1)


@click.command("profiles")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--rows", "show_rows", is_flag=True, help="Print every profile's table, not only the summary.")
@click.option("--json", "as_json", is_flag=True, help="Every profile as JSON, plus the files that failed to load.")
@user_errors
def profiles_cmd(paths: tuple[Path, ...], show_rows: bool, as_json: bool) -> None:
    """Summarize stored profiles (default: everything under ./profiles).

    A file that is corrupt or not a profile is reported by name on stderr (exit 1); the
    others are still listed.

    \b
    Examples:
      lora-budget profiles
      lora-budget profiles profiles/cpu --rows
      lora-budget profiles profiles/nvidia-h100-80gb-hbm3/llama-3-1-8b-20260101-120000.json --json
    """
    _list(list(paths), as_json=as_json, show_rows=show_rows)


@click.command("calibrate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Calibration file (default: the one plan reads).")
@click.option("--card", help="Catalog card of the profiled GPU when its CUDA name does not resolve to one.")
@click.option("--dry-run", is_flag=True, help="Fit and report; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="The fitted entries as JSON.")
@user_errors
def calibrate_cmd(paths: tuple[Path, ...], out: Path | None, card: str | None, dry_run: bool, as_json: bool) -> None:
    """Fit the planner's overhead per GPU and software version from stored GPU profiles.

    The overhead (plan residual + allocator reserve + CUDA context) is the mean gap between the
    memory a configuration needed on the GPU and the plan for it; the error bar is the largest
    gap left after adding it. `plan --gpu CARD` then includes it and shows the error bar.

    \b
    Examples:
      lora-budget calibrate
      lora-budget calibrate profiles/nvidia-h100-80gb-hbm3 --card h100-sxm --dry-run
    """
    from lora_budget import records
    from lora_budget.catalog import calibration
    from lora_budget.catalog.gpus import resolve_gpu
    from lora_budget.cli.profile_render import render_calibration
    from lora_budget.profile.calibrate import fit, write
    from lora_budget.profile.store import load_profiles

    if not dry_run:  # an unwritable --out fails before loading and fitting
        from lora_budget.fsio import check_destination

        check_destination(out or calibration.PATH)
    profiles, errors = load_profiles(list(paths) or [DEFAULT_ROOT])
    for e in errors:
        click.echo(f"error: {e} (skipped)", err=True)
    result = fit(profiles, card=resolve_gpu(card).name if card else None)
    if not result.entries:
        cpu = sum(p.environment.get("device") != "cuda" for p in profiles)
        raise click.ClickException(
            f"no successful GPU rows to calibrate from ({len(profiles)} profiles loaded, {cpu} of them CPU-only); "
            "run `lora-budget profile --device cuda` on a GPU first"
        )
    if as_json:
        click.echo(json.dumps([records.asdict(e) for e in result.entries], indent=2))
    else:
        click.echo(render_calibration(result.entries))
    if len(result.skipped):
        click.echo(f"{len(result.skipped)} profiles or rows not fitted (CPU profiles, OOM or failed rows)", err=True)
    if not dry_run:
        target = out or calibration.PATH
        replaced, added = write(result.entries, target)
        click.echo(f"wrote {target} ({added} entries added, {replaced} replaced)", err=True)
    if errors:
        sys.exit(1)
