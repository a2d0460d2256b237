"""The fuzzer's cases: one generator per target, every one cheap by construction.

A target is a CLI command, ``serve`` (its ``/api/plan`` handler), ``api`` (``lora_budget.plan``) or
``config`` (the ``--config`` and ``config.json`` readers, fed mutated real files). Case ``i`` of a
seed is drawn from ``random.Random(f"{seed}:{i}")``, so a run split into chunks draws the same cases
as one long run, and a printed case can be replayed alone (``fuzz.py --replay SEED:I``).

Keeping cases cheap (the last 2,000-case run hung for more than 13 minutes on real work):

- torch commands (trace, derive, profile, report --trace, check --engine trace|profile) only ever see the
  4-layer ``tests/data/tiny-llama`` config as a valid model, never a catalog model;
- ``validate`` always gets a bad ``--models`` or an unusable ``--out``, so it never starts the grid;
- trace, derive, profile and check --engine trace|profile get, last, one value each refuses before
  its step starts (``SURELY_BAD``); ``profile`` starts from ``--device cpu --steps 1 --warmup 0
  --methods lora -s 16 -b 1``, and 1 profile or check case in 10 gets no sure-bad value, so it may
  run one real step (its limit is ``REAL_RUN_LIMIT_S``);
- destinations (``--out``, ``--baseline``, ``--timeline``) get FIFOs and device nodes often, and
  readers (``--data``, ``--price-file``, ``--profiles``, paths) get them too.

What still runs real work is bounded by the runner's per-case time limit and counted as a timeout.
"""

from __future__ import annotations

import copy
import importlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "data" / "tiny-llama" / "config.json")
BAD = ROOT / "tests" / "data" / "bad"
CORPUS = ROOT / "tests" / "data" / "configs"

from lora_budget.cli import COMMANDS  # noqa: E402

CLI_TARGETS = tuple(n for n in COMMANDS if n != "serve")
TARGETS = (*CLI_TARGETS, "serve", "api", "config")
TORCH = {"trace", "profile", "validate", "derive"}
DESTINATIONS = ("--out", "--baseline", "--timeline")
READERS = ("--data", "--price-file", "--profiles", "--tokenizer", "--weights", "--config")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One input: a target and what it is given."""

    target: str
    args: tuple[str, ...] = ()
    """CLI arguments (CLI targets, ``config``), or query (key, value) pairs flattened (``serve``)."""
    body: str | None = None
    """``serve``: a POST body (a pasted config.json); ``config``: the file's text."""
    file_name: str = ""
    """``config``: the name the file is written under in the case's folder."""
    call: tuple[tuple[Any, ...], dict[str, Any]] = field(default=((), {}))
    """``api``: positional and keyword arguments of ``lora_budget.plan``."""
    limit_s: float | None = None
    """Its own time limit, where it may run real work (else the runner's)."""

    def describe(self) -> str:
        if self.target == "api":
            return f"lora_budget.plan(*{self.call[0]!r:.200}, **{self.call[1]!r:.300})"
        if self.target == "config":
            return f"{self.file_name} ({len(self.body or '')} chars) | {' '.join(a[:60] for a in self.args)}"
        return " ".join(a[:60] for a in self.args) + (f" <body {len(self.body)} chars>" if self.body else "")


def nasty(guard: Path) -> list[str]:
    """Bad option values, and files a user should not have given."""
    corpus = sorted(str(p) for p in BAD.rglob("*") if p.is_file())
    return [
        "", " ", ",", ",,", "0", "-1", "-0", "1.5", "inf", "-inf", "nan", "NaN", "1e-300", "1e309", "1e400GB",
        "9" * 400, "1" * 5000, "a" * 300, "x" * 5000, "\x00", "nul\x00byte", "é💥", "../../etc/passwd",
        "/dev/null", "/proc/version", ".", "/", "/nonexistent/x.json", "/nonexistent/a/b",
        str(guard / "ro" / "x.json"), str(guard / "ro"), str(guard / "fifo"), str(guard / "link-to-fifo"),
        str(guard / "config.json"), str(guard / "profile.json"), str(guard / "notes.txt"),
        "24GB", "0GB", "-24GB", "auto", "lora,dora", "full,lora,qlora", "all", "{}", "[]", "null", *corpus,
    ]  # fmt: skip


def destinations(guard: Path) -> list[str]:
    """Where a writing command must not write: FIFOs, devices, a user's files, odd folders."""
    return [
        str(guard / "fifo"), str(guard / "link-to-fifo"), "/dev/full", "/dev/zero", "/dev/null",
        str(guard / "config.json"), str(guard / "profile.json"), str(guard / "notes.txt"), str(guard / "ro"),
        str(guard), "/proc/version", "/proc/x/y", "/nonexistent/a/b", "a" * 300,
    ]  # fmt: skip


VALID = {
    "--model": ["7b", TINY, "Llama-3.1-8B"],
    "--gpu": ["24GB", "h100", "80GiB"],
    "--method": ["lora", "qlora", "full", "all"],
    "--methods": ["lora", "qlora", "full,lora"],
    "--seq-len": ["16", "512", "2048"],
    "--batch-size": ["1", "4", "auto"],
    "--out": ["out.json", "rep", "out"],
    "--baseline": ["b.json"],
    "--timeline": ["t.csv"],
    "--tolerance": ["1", "0"],
    "--epochs": ["1", "3"],
    "--dataset-tokens": ["1M"],
    "--tokens": ["1M", "1e8"],
    "--price": ["2.5", "h100=2.5"],
    "--gpus": ["1", "8"],
    "--steps": ["1"],
    "--rank": ["8", "64"],
}
TORCH_VALID = {**VALID, "--model": [TINY], "--seq-len": ["16", "64"], "--batch-size": ["1", "2"]}


def _params(name: str) -> list[click.Parameter]:
    module, attr = COMMANDS[name].split(":")
    return list(getattr(importlib.import_module(module), attr).params)


def cli_case(rng: random.Random, name: str, guard: Path) -> Case:
    """A command line: the command's cheap skeleton, then 1 to 4 options with bad or valid values."""
    values, dests = nasty(guard), destinations(guard)
    params = [p for p in _params(name) if isinstance(p, click.Option) and p.opts[0] != "--help"]
    torch_like = name in TORCH or name in ("report", "check")
    valid = TORCH_VALID if torch_like else VALID
    args: list[str] = ["--offline"] if any(p.opts[0] == "--offline" for p in params) else []
    if name in ("trace", "check", "report", "profile", "derive") or (name == "search" and rng.random() < 0.5):
        args += ["--model", TINY]
    if name == "profile":
        args += ["--device", "cpu", "--steps", "1", "--warmup", "0", "--methods", "lora", "-s", "16", "-b", "1"]
    if name == "check":
        args += ["--baseline", "b.json"]
    if name == "validate":
        if rng.random() < 0.5:
            args += ["--models", rng.choice(values), "--out", rng.choice(values + dests)]
        else:  # a real grid choice, so only an unusable --out stops it before tracing
            refused = [d for d in dests if d not in (str(guard), str(guard / "ro"))]  # root writes into ro/
            args += ["--quick", "--models", "GPT-2", "--out", rng.choice(refused)]
        params = [p for p in params if p.opts[0] not in ("--models", "--out", "--quick")]
    real_run = name in ("profile", "check") and rng.random() < 0.1  # 1 in 10 may measure (check: --engine)
    for p in rng.sample(params, k=min(len(params), rng.randint(1, 4))):
        opt = p.opts[0]
        if p.is_flag:
            args.append(opt)
            continue
        if isinstance(p.type, click.Choice) and rng.random() < 0.5:
            args += [opt, rng.choice(list(p.type.choices))]
            continue
        if rng.random() < 0.7:
            pool = dests if opt in DESTINATIONS and rng.random() < 0.5 else values
            args += [opt, rng.choice(pool)]
        else:
            args += [opt, rng.choice(valid.get(opt, values))]
    steps = name in TORCH and name != "validate" or name == "check" and ("trace" in args or "profile" in args)
    if steps and not real_run:  # last, so it wins: the step never starts
        names = {p.opts[0] for p in params}
        opt = rng.choice([o for o in SURELY_BAD if o in names])
        args += [opt, rng.choice(SURELY_BAD[opt])]
    if name == "check" and rng.random() < 0.4:
        args += ["--update-baseline", "--baseline", rng.choice(dests + ["b.json"])]
    if name in ("profiles", "calibrate") and rng.random() < 0.6:
        args.append(rng.choice(values))
    return Case(target=name, args=(name, *args), limit_s=REAL_RUN_LIMIT_S if real_run else None)


SURELY_BAD = {
    "--seq-len": ["0", "-1", "inf", "x" * 300, "9" * 400, ""],
    "--batch-size": ["0", "-1", "x", "9" * 400],
    "--method": ["bogus", "lora,dora", ","],
    "--methods": ["bogus", "lora,dora", ","],
    "--rank": ["0", "-1"],
}
"""Values every torch command refuses before its step starts (one is appended last to each case)."""
REAL_RUN_LIMIT_S = 120.0
"""A profile case that may measure for real: a worker process imports torch and runs one step."""


SERVE_KEYS = ("model", "gpu", "method", "seq-len", "batch-size", "rank", "gpus", "strategy", "overhead", "tokens")


def serve_case(rng: random.Random, guard: Path) -> Case:
    """A query for GET/POST /api/plan: known keys with bad values, now and then an unknown key or a body."""
    values = nasty(guard)
    pairs: list[str] = []
    for _ in range(rng.randint(0, 4)):
        key = rng.choice([*SERVE_KEYS, "grad-ckpt", "bogus", "model\x00", ""])
        pairs += [key, rng.choice(values + ["1", "0", "true", "7b", "h100"])]
    body = None
    if rng.random() < 0.3:
        body = rng.choice(
            [
                "", "{", "[]", "null", '{"model_type": "llama"}', "[" * 100_000 + "]" * 100_000,
                '{"vocab_size": ' + "9" * 5000 + "}", Path(TINY).read_text(), _mutate_json(rng, Path(TINY).read_text()),
            ]
        )  # fmt: skip
    return Case(target="serve", args=tuple(pairs), body=body)


API_VALUES: list[Any] = [
    0, -1, 1, 3, 2**70, 10**400, 1.5, -0.0, 1e-300, float("inf"), float("-inf"), float("nan"),
    "", "abc", "1", "lora", "all-linear", None, True, False, [], {}, ("lora",), "9" * 400, b"bytes",
]  # fmt: skip


def api_case(rng: random.Random) -> Case:
    """``lora_budget.plan(model, gpu, methods, **options)`` with bad types and values, and misspelt keywords."""
    import dataclasses

    from lora_budget.spec import TrainSpec

    fields = [f.name for f in dataclasses.fields(TrainSpec) if f.name not in ("model", "method")]
    keys = [*fields, "batch_size", "overhead_bytes", "total_tokens", "price_usd_per_h", "inter_node_gbps", "methd"]
    model = rng.choice(["7b", TINY, "8b", "", "nope", 7, None, "x" * 5000])
    gpu = rng.choice(["24GB", "h100", "0GB", "-1GB", "1e400GB", "", 24, None])
    methods = rng.choice([("full", "lora", "qlora"), "lora", "all", "lora,dora", "", (), ["qlora"], 3])
    options = {k: rng.choice(API_VALUES) for k in rng.sample(keys, k=rng.randint(0, 3))}
    return Case(target="api", call=((model, gpu, methods), options))


CONFIG_VALUES: list[Any] = [
    0, -1, 10**400, 1.5, "abc", "", None, True, [], {}, [[[[1]]]], "9" * 400, -(2**63), 2**64,
    float("inf"), float("nan"), "x" * 5000, {"a": {"b": {"c": None}}},
]  # fmt: skip


def _files() -> list[Path]:
    keep = [p for p in sorted(CORPUS.rglob("*")) if p.suffix in (".json", ".yaml", ".yml") and p.is_file()]
    return [Path(TINY), *keep[::8]]  # every 8th corpus file: ~60 real files of every format


def _mutate(rng: random.Random, data: Any, deepest: int = 1500) -> Any:
    """``data`` with one value replaced, one key dropped, or a too-deep value added (``deepest`` levels at most)."""
    data = copy.deepcopy(data)
    holders = [data] if isinstance(data, dict) else []
    stack = list(holders)
    while stack:
        for value in stack.pop().values():
            if isinstance(value, dict):
                holders.append(value)
                stack.append(value)
    if not holders:
        return rng.choice(CONFIG_VALUES)
    holder = rng.choice(holders)
    roll = rng.random()
    if roll < 0.15 and holder:
        holder.pop(rng.choice(sorted(holder, key=str)))
    elif roll < 0.2:
        deep: Any = 1
        for _ in range(rng.choice([150, deepest])):
            deep = [deep]
        holder["deep"] = deep
    elif holder:
        holder[rng.choice(sorted(holder, key=str))] = rng.choice(CONFIG_VALUES)
    return data


def _mutate_json(rng: random.Random, text: str) -> str:
    return json.dumps(_mutate(rng, json.loads(text), deepest=150))


def config_case(rng: random.Random) -> Case:
    """A real config file (or model config.json) with one value made bad, read by plan or check."""
    import sys

    import yaml

    source = rng.choice(_files())
    text = source.read_text()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))  # json.dumps of a 1,500-deep value
    if rng.random() < 0.1:
        body = text[: rng.randint(0, len(text))]  # a truncated file
    elif source.suffix == ".json":
        body = json.dumps(_mutate(rng, json.loads(text)), indent=1)
    else:
        body = yaml.safe_dump(_mutate(rng, yaml.safe_load(text), deepest=150), sort_keys=False)
    name = source.name if source.suffix == ".json" else f"cfg{source.suffix}"
    if source.name == "config.json" and rng.random() < 0.6:
        args = ("plan", "-m", name, "-g", "24GB")
    elif rng.random() < 0.8:
        args = ("plan", "--config", name, *(("-m", TINY) if rng.random() < 0.5 else ()))
    else:
        args = ("check", "--config", name, "-m", TINY, "--baseline", "b.json", "--update-baseline")
    return Case(target="config", args=args, body=body, file_name=name)


def make_case(seed: int, i: int, guard: Path) -> Case:
    """Case ``i`` of ``seed``: the targets in turn, the case's own random stream."""
    rng = random.Random(f"{seed}:{i}")
    target = TARGETS[i % len(TARGETS)]
    if target == "serve":
        return serve_case(rng, guard)
    if target == "api":
        return api_case(rng)
    if target == "config":
        return config_case(rng)
    return cli_case(rng, target, guard)
