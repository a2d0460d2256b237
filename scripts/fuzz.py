"""Fuzz every ``lora-budget`` command with nasty option values; count tracebacks and clobbered files.

Each case runs in-process (click's CliRunner) in a fresh temp folder, with ``HF_HUB_OFFLINE=1``
(nothing is downloaded). A case passes when:

- the exit code is 0, 1 or 2 (130 for an interrupted sweep does not arise here);
- no Python traceback escaped (``result.exception`` is None or SystemExit, no "Traceback");
- a failure prints exactly one ``Error:`` line;
- nothing outside the temp folder changed: the guard folder's inputs (a config, a profile, a
  FIFO, a symlink to the FIFO, a read-only folder) keep their bytes, mode and file type, and the
  repository's shipped data files keep their size and mtime.

Values come from ``NASTY`` (non-finite, huge, empty, long, odd paths, the ``tests/data/bad``
corpus) mixed with valid ones; torch commands (trace, profile, validate, check --engine trace)
always get at least one nasty value so most end in a cheap failure. ``serve`` (a server that
blocks) and ``search`` are not fuzzed here.

    python scripts/fuzz.py --cases 2000 --seed 1
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import stat
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"

import click  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from lora_budget.cli import COMMANDS, main  # noqa: E402

TINY = str(ROOT / "tests" / "data" / "tiny-llama" / "config.json")
BAD = ROOT / "tests" / "data" / "bad"
SKIP = {"serve", "search"}
HEAVY = {"trace", "profile", "validate"}
GUARD: list[Path] = []
SHIPPED = [ROOT / "profiles", ROOT / "tests" / "data", ROOT / "lora_budget" / "catalog"]


def nasty(guard: Path) -> list[str]:
    corpus = sorted(str(p) for p in BAD.rglob("*") if p.is_file())
    return [
        "", " ", ",", ",,", "0", "-1", "-0", "1.5", "inf", "-inf", "nan", "NaN", "1e-300", "1e309", "1e400GB",
        "9" * 400, "1" * 5000, "a" * 300, "x" * 5000, "\x00", "nul\x00byte", "é💥", "../../etc/passwd",
        "/dev/null", "/proc/version", ".", "/", "/nonexistent/x.json",
        str(guard / "ro" / "x.json"), str(guard / "ro"),
        str(guard / "config.json"), str(guard / "profile.json"), "24GB", "0GB", "-24GB", "auto", "lora,dora",
        "full,lora,qlora", "all", "{}", "[]", "null", *corpus,
    ]  # fmt: skip


VALID = {
    "--model": [TINY, "7b", "Llama-3.1-8B"],
    "-m": [TINY],
    "--gpu": ["24GB", "h100", "80GiB"],
    "--method": ["lora", "qlora", "full", "all"],
    "--seq-len": ["16", "512", "2048"],
    "--batch-size": ["1", "4", "auto"],
    "--out": ["out.json", "rep", "out"],
    "--baseline": ["b.json"],
    "--timeline": ["t.csv"],
    "--tolerance": ["1", "0"],
    "--epochs": ["1", "3"],
    "--dataset-tokens": ["1M"],
    "--tokens": ["1M", "1e8"],
    "--price": ["2.5"],
}


def make_guard(folder: Path) -> None:
    import shutil

    folder.mkdir()
    shutil.copy(TINY, folder / "config.json")
    shutil.copy(next((ROOT / "profiles").rglob("*.json")), folder / "profile.json")
    os.mkfifo(folder / "fifo")
    (folder / "link-to-fifo").symlink_to(folder / "fifo")
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)


def snapshot(folder: Path, roots: list[Path]) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        body = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), body)
    for root in roots:
        for p in root.rglob("*"):
            if "__pycache__" not in p.parts:
                st = os.lstat(p)
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    command: str
    args: tuple[str, ...]
    exit_code: int
    problem: str  # "" when the case passed


def options_of(name: str) -> list[click.Parameter]:
    module, attr = COMMANDS[name].split(":")
    return list(getattr(importlib.import_module(module), attr).params)


DESTINATIONS = ("--out", "--baseline", "--timeline")
"""Options that name a file to write: only these get a FIFO or an endless device (a reader of an
unfed FIFO or of /dev/zero waits or reads forever, as ``cat`` would)."""


def dest_values(guard: Path) -> list[str]:
    return [str(guard / "fifo"), str(guard / "link-to-fifo"), "/dev/full", "/dev/zero", "/dev/null"]


def case_args(rng: random.Random, name: str, values: list[str]) -> list[str]:
    """One command line: a few options with nasty or valid values (torch commands: one nasty at least)."""
    params = [p for p in options_of(name) if isinstance(p, click.Option) and p.opts[0] not in ("--help",)]
    args = ["--offline"] if any(p.opts[0] == "--offline" for p in params) else []
    if name in ("trace", "check", "report", "profile"):
        args += ["--model", TINY]
    if name == "check":
        args += ["--baseline", "b.json"]
    picked = rng.sample(params, k=min(len(params), rng.randint(1, 4)))
    forced_bad = name in HEAVY
    for p in picked:
        opt = p.opts[0]
        if p.is_flag:
            args.append(opt)
            continue
        if isinstance(p.type, click.Choice) and rng.random() < 0.5:
            args += [opt, rng.choice(list(p.type.choices))]
            continue
        if forced_bad or rng.random() < 0.7:
            pool = values
            if opt in DESTINATIONS and rng.random() < 0.4:
                pool = dest_values(GUARD[0])
            args += [opt, rng.choice(pool)]
            forced_bad = False
        else:
            args += [opt, rng.choice(VALID.get(opt, values))]
    if forced_bad:  # a torch command whose options were all flags: one bad value still
        args += ["--seq-len", rng.choice(["0", "-1", "inf", "x" * 300])]
    if name in ("profiles", "calibrate") and rng.random() < 0.6:
        args.append(rng.choice(values))
    return args


def run_case(name: str, args: list[str], guard: Path) -> Outcome:
    """Run ``lora-budget name args`` in a fresh temp folder and judge it (see the module docstring)."""
    before = snapshot(guard, SHIPPED)
    with tempfile.TemporaryDirectory() as work:
        cwd = os.getcwd()
        os.chdir(work)
        try:
            result = CliRunner().invoke(main, [name, *args])
        finally:
            os.chdir(cwd)
    problem = ""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        problem = f"traceback: {type(exc).__name__}: {str(exc)[:200]}"
    elif "Traceback (most recent call last)" in result.output:
        problem = "traceback in output"
    elif result.exit_code not in (0, 1, 2):
        problem = f"exit code {result.exit_code}"
    elif result.exit_code != 0 and sum(line.startswith("Error:") for line in result.stderr.splitlines()) > 1:
        problem = "more than one error line"
    after = snapshot(guard, SHIPPED)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problem = f"clobbered: {changed[:3]}"
    return Outcome(command=name, args=tuple(args), exit_code=result.exit_code, problem=problem)


def fuzz(cases: int, seed: int, *, quiet: bool = False) -> list[Outcome]:
    rng = random.Random(seed)
    names = [n for n in COMMANDS if n not in SKIP]
    with tempfile.TemporaryDirectory() as top:
        guard = Path(top) / "guard"
        make_guard(guard)
        GUARD[:] = [guard]
        values = nasty(guard)
        outcomes = []
        for i in range(cases):
            name = names[i % len(names)]
            outcomes.append(run_case(name, case_args(rng, name, values), guard))
            if not quiet and outcomes[-1].problem:
                print(f"PROBLEM {name} {[a[:40] for a in outcomes[-1].args]}: {outcomes[-1].problem}", flush=True)
        (guard / "ro").chmod(0o755)
    return outcomes


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    ns = parser.parse_args()
    started = time.monotonic()
    outcomes = fuzz(ns.cases, ns.seed)
    wall = time.monotonic() - started
    tracebacks = sum(o.problem.startswith("traceback") for o in outcomes)
    clobbered = sum(o.problem.startswith("clobbered") for o in outcomes)
    other = sum(bool(o.problem) for o in outcomes) - tracebacks - clobbered
    per = Counter(o.command for o in outcomes)
    codes = Counter(o.exit_code for o in outcomes)
    print(f"{len(outcomes)} cases over {len(per)} commands in {wall:.0f} s (seed {ns.seed})")
    print("per command: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
    print("exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print(f"tracebacks: {tracebacks}  clobbered files: {clobbered}  other problems: {other}")
    sys.exit(1 if tracebacks or clobbered or other else 0)


if __name__ == "__main__":
    main_()
