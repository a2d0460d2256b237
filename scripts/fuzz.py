"""Fuzz every ``lora-budget`` entry point; count tracebacks, clobbered files and timeouts.

Targets (``fuzz_cases.py`` draws the inputs): every CLI command but ``serve`` (plan, trace, derive,
validate, profile, profiles, calibrate, report, check, models, gpus, search: ``cli.COMMANDS``, so a
new command is fuzzed without a change here), ``serve``'s
``/api/plan`` handler, the Python API (``lora_budget.plan``) and the ``--config`` / ``config.json``
readers fed mutated real files.

Each case runs in a forked child (torch, transformers, peft, bitsandbytes and matplotlib are
imported once, before the first fork) in a fresh temp folder with ``HF_HUB_OFFLINE=1`` and its caches inside it, under a
hard time limit: a child still running at ``--limit`` seconds is killed with its process group
(profile's workers included) and counted as a **timeout**, its own kind, never a pass. Kinds:

- ``ok``: exit 0, or 1/2 with exactly one ``Error:`` line; the API returned a plan whose
  ``to_dict()`` is strict JSON, or raised LoraBudgetError; the handler answered 200 with strict
  JSON or 400 with one error line;
- ``traceback``: an exception escaped, "Traceback" was printed, the handler answered 500, the API
  raised anything but LoraBudgetError, or the child died;
- ``clobbered``: an entry of the guard folder (a config, a profile, notes, a FIFO, a symlink to
  it, a read-only folder) changed bytes, mode or type or vanished, or a shipped data file under
  ``profiles/``, ``tests/data/`` or ``lora_budget/catalog/`` changed size or mtime. A new file
  that a command was asked to write in the guard folder is not a clobber (it is removed);
- ``other``: an exit code outside {0, 1, 2}, or more than one error line;
- ``timeout``: see above.

Measured (seed 1, commit 98f9972, 2 shared cores, 8 chunks of 250 run from ``git archive HEAD``):
2,000 cases, 133 or 134 per target, in 728 s: 0 tracebacks, 0 clobbered, 0 other, 0 timeouts;
the slowest case 28.7 s (a profile measuring one real step). A 150-case sample (seed 7) passed with
exit 0: 28, 1: 7, 2: 105 and HTTP 200: 2, 400: 8.

    python scripts/fuzz.py --cases 2000 --seed 1                     # one run
    python scripts/fuzz.py --start 0 --cases 500 --summary a.json    # a chunk of the same run
    python scripts/fuzz.py --combine a.json b.json c.json d.json     # the figure of the chunks
    python scripts/fuzz.py --replay 1:1234                           # one case, output shown
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # workers too
os.environ.pop("LORA_BUDGET_DEBUG", None)

from fuzz_cases import TARGETS, TINY, Case, make_case  # noqa: E402

SHIPPED = [ROOT / "profiles", ROOT / "tests" / "data", ROOT / "lora_budget" / "catalog"]
KINDS = ("ok", "traceback", "clobbered", "other", "timeout")
LIMIT_S = 30.0


def make_guard(folder: Path) -> None:
    """The user's files that no case may change (the cases name them as inputs and outputs)."""
    folder.mkdir()
    shutil.copy(TINY, folder / "config.json")
    shutil.copy(next((ROOT / "profiles").rglob("*.json")), folder / "profile.json")
    (folder / "notes.txt").write_text("a user's notes\n")
    (folder / "notes.txt").chmod(0o600)
    os.mkfifo(folder / "fifo")
    (folder / "link-to-fifo").symlink_to(folder / "fifo")
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)


def release_guard(folder: Path) -> None:
    (folder / "ro").chmod(0o755)


def snapshot(guard: Path) -> dict[str, tuple]:
    """Type, mode and bytes of every guard entry; size and mtime of every shipped file."""
    out: dict[str, tuple] = {}
    for p in sorted(guard.rglob("*")):
        st = os.lstat(p)
        body = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), body)
    for root in SHIPPED:
        for p in root.rglob("*"):
            if "__pycache__" not in p.parts:
                st = os.lstat(p)
                out[str(p)] = (stat.S_IFMT(st.st_mode),) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)
    return out


def _one_error_line(text: str) -> bool:
    return sum(line.startswith("Error:") for line in text.splitlines()) <= 1


def _judge_cli(args: tuple[str, ...]) -> tuple[str, str, int]:
    from click.testing import CliRunner

    from lora_budget.cli import main

    result = CliRunner().invoke(main, list(args))
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback", f"{type(exc).__name__}: {str(exc)[:200]}", result.exit_code
    if "Traceback (most recent call last)" in result.output or "please report" in result.output:
        return "traceback", result.output.strip().splitlines()[-1][:200], result.exit_code
    if result.exit_code not in (0, 1, 2):
        return "other", f"exit code {result.exit_code}", result.exit_code
    if result.exit_code != 0 and not _one_error_line(result.stderr):
        return "other", "more than one error line", result.exit_code
    return "ok", "", result.exit_code


def _strict_json(text: str) -> None:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in JSON")

    json.loads(text, parse_constant=refuse)


def _judge_serve(case: Case) -> tuple[str, str, int]:
    from types import SimpleNamespace
    from urllib.parse import urlencode

    from lora_budget.cli import serve_cmd

    handler = serve_cmd.Handler.__new__(serve_cmd.Handler)
    pairs = list(zip(case.args[::2], case.args[1::2], strict=True))
    handler.path = "/api/plan?" + urlencode(pairs)
    handler.server = SimpleNamespace(models="[]")
    sent: list[tuple[int, str]] = []
    handler._send = lambda status, body, ctype="application/json": sent.append((status, body))
    handler._answer(case.body)
    if len(sent) != 1:
        return "other", f"{len(sent)} answers", 1
    status, body = sent[0]
    if status == 500 or "Traceback" in body:
        return "traceback", body[:200], status
    try:
        _strict_json(body)
    except ValueError as exc:
        return "other", f"HTTP {status} body is not strict JSON: {exc}", status
    if status == 400 and "\n" in json.loads(body).get("error", "\n"):
        return "other", "HTTP 400 without a one-line error", status
    return ("ok", "", status) if status in (200, 400) else ("other", f"HTTP {status}", status)


def _judge_api(case: Case) -> tuple[str, str, int]:
    import lora_budget
    from lora_budget.errors import LoraBudgetError

    args, kwargs = case.call
    try:
        result = lora_budget.plan(*args, **kwargs)
        json.dumps([m.to_dict() for m in result.methods], allow_nan=False)
    except LoraBudgetError as exc:
        return ("ok", "", 2) if "\n" not in str(exc) else ("other", "a multi-line error", 2)
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        return "traceback", f"{type(exc).__name__}: {str(exc)[:200]}", 1
    return "ok", "", 0


def isolate(work: Path) -> None:
    """Point every cache a command may write (derived coefficients under ``$XDG_CACHE_HOME``, the
    Hugging Face cache) into the case's own folder: nothing outside it is written, and no case
    sees what an earlier one cached."""
    os.environ["XDG_CACHE_HOME"] = str(work / ".cache")
    os.environ["HF_HOME"] = str(work / ".cache" / "huggingface")
    os.environ.pop("LORA_BUDGET_COEFFICIENTS", None)
    os.environ.pop("HF_HUB_CACHE", None)


def judge(case: Case) -> tuple[str, str, int]:
    """Run ``case`` here (the child, in its temp folder): (kind, detail, exit code or HTTP status)."""
    if case.target == "serve":
        return _judge_serve(case)
    if case.target == "api":
        return _judge_api(case)
    if case.target == "config":
        Path(case.file_name).write_text(case.body or "")
    return _judge_cli(case.args)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    index: int
    target: str
    kind: str
    detail: str
    code: int
    wall_s: float
    case: str


def _kill(pid: int) -> None:
    """SIGKILL the case's process group (the child and any worker it started), then reap the child."""
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)


def run_case(index: int, case: Case, guard: Path, *, limit_s: float = LIMIT_S) -> Outcome:
    """Run ``case`` in a forked child under ``limit_s`` seconds (or its own limit) and judge it and the guard folder."""
    limit_s = case.limit_s or limit_s
    before = snapshot(guard)
    work = tempfile.mkdtemp(prefix="fuzz-case-")
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: its own process group, so a timeout kills its workers too
        os.close(read_end)
        code = 0
        try:
            os.setpgid(0, 0)
            os.chdir(work)
            isolate(Path(work))
            verdict = judge(case)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised in the fuzzer
            verdict = ("traceback", f"{type(exc).__name__} in the runner: {str(exc)[:200]}", 1)
        try:
            os.write(write_end, json.dumps(verdict).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    timed_out = False
    try:
        while True:
            left = limit_s - (time.monotonic() - started)
            ready, _, _ = select.select([read_end], [], [], max(left, 0))
            if not ready:
                timed_out = True
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BaseException:  # the fuzzer itself interrupted: take the case's processes down with it
        _kill(pid)
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        os.close(read_end)
    if timed_out:
        _kill(pid)
    else:
        os.waitpid(pid, 0)
    wall_s = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    if timed_out:
        kind, detail, code = "timeout", f"still running at {limit_s:.0f} s", -1
    elif not chunks:
        kind, detail, code = "traceback", "the child died without a verdict", -1
    else:
        kind, detail, code = json.loads(b"".join(chunks))
    after = snapshot(guard)
    changed = sorted(k for k in before if before[k] != after.get(k))
    if changed:
        kind, detail = "clobbered", f"{changed[:3]}"
    for new in sorted(set(after) - set(before), reverse=True):  # written where asked: removed, not a clobber
        path = Path(new)
        if path.is_relative_to(guard):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        else:
            kind, detail = "clobbered", f"new file in shipped data: {new}"
    return Outcome(index=index, target=case.target, kind=kind, detail=detail, code=code, wall_s=wall_s,
                   case=case.describe())  # fmt: skip


def preload() -> None:
    """Import the heavy libraries once, before the first fork, so no case pays for them."""
    import lora_budget.cli.plan_cmd  # noqa: F401
    from lora_budget.cli.errors import quiet_third_party

    quiet_third_party()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import lora_budget.trace.engine  # noqa: F401
    except ImportError:
        pass


def fuzz(
    seed: int,
    start: int,
    cases: int,
    *,
    limit_s: float = LIMIT_S,
    quiet: bool = False,
    outcomes: list[Outcome] | None = None,
) -> list[Outcome]:
    """Cases ``start`` to ``start + cases - 1`` of ``seed``, appended to ``outcomes`` as they finish."""
    preload()
    outcomes = [] if outcomes is None else outcomes
    with tempfile.TemporaryDirectory() as top:
        guard = Path(top) / "guard"
        make_guard(guard)
        try:
            for i in range(start, start + cases):
                outcome = run_case(i, make_case(seed, i, guard), guard, limit_s=limit_s)
                outcomes.append(outcome)
                if not quiet and outcome.kind != "ok":
                    print(f"{outcome.kind.upper()} [{seed}:{i}] {outcome.target}: {outcome.case[:300]}\n"
                          f"    {outcome.detail}", flush=True)  # fmt: skip
        finally:
            release_guard(guard)
    return outcomes


def summary(outcomes: list[Outcome], seed: int, wall_s: float) -> dict:
    per: dict[str, dict[str, int]] = {t: dict.fromkeys(KINDS, 0) for t in TARGETS}
    for o in outcomes:
        per[o.target][o.kind] += 1
    codes = Counter(str(o.code) for o in outcomes if o.kind == "ok")
    return {"seed": seed, "cases": len(outcomes), "wall_s": round(wall_s, 1), "per_target": per, "ok_codes": codes,
            "slowest": sorted(([o.wall_s, o.target, o.index] for o in outcomes), reverse=True)[:5]}  # fmt: skip


def combine(parts: list[dict]) -> dict:
    per: dict[str, Counter] = {t: Counter() for t in TARGETS}
    for part in parts:
        for target, kinds in part["per_target"].items():
            per[target].update(kinds)
    codes = Counter()
    for part in parts:
        codes.update(part.get("ok_codes", {}))
    return {"seed": sorted({p["seed"] for p in parts}), "cases": sum(p["cases"] for p in parts), "ok_codes": codes,
            "wall_s": round(sum(p["wall_s"] for p in parts), 1),
            "per_target": {t: {k: c[k] for k in KINDS} for t, c in per.items()},
            "slowest": sorted((s for p in parts for s in p["slowest"]), reverse=True)[:5]}  # fmt: skip


def render(figure: dict) -> str:
    lines = [f"{figure['cases']} cases over {len(TARGETS)} targets in {figure['wall_s']:.0f} s (seed {figure['seed']})"]
    lines.append(f"{'target':<10}" + "".join(f"{k:>11}" for k in ("cases", *KINDS)))
    totals = Counter()
    for target, kinds in figure["per_target"].items():
        totals.update(kinds)
        lines.append(f"{target:<10}{sum(kinds.values()):>11}" + "".join(f"{kinds[k]:>11}" for k in KINDS))
    lines.append(f"{'all':<10}{sum(totals.values()):>11}" + "".join(f"{totals[k]:>11}" for k in KINDS))
    codes = figure.get("ok_codes", {})
    lines.append("passing cases by exit code (HTTP status for serve): "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: int(kv[0]))))  # fmt: skip
    lines.append("slowest cases (s, target, case): " + ", ".join(f"{s:.1f} {t} #{i}" for s, t, i in figure["slowest"]))
    lines.append(f"tracebacks: {totals['traceback']}  clobbered: {totals['clobbered']}  "
                 f"other problems: {totals['other']}  timeouts: {totals['timeout']}")  # fmt: skip
    return "\n".join(lines)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="first case index (to run a long fuzz in chunks)")
    parser.add_argument("--limit", type=float, default=LIMIT_S, help="seconds a case may run before it is killed")
    parser.add_argument("--summary", help="also write the figure as JSON here (for --combine)")
    parser.add_argument("--combine", nargs="+", help="print the figure of these --summary files and exit")
    parser.add_argument("--replay", help="SEED:INDEX: run that one case and show its output")
    ns = parser.parse_args()
    if ns.combine:
        figure = combine([json.loads(Path(p).read_text()) for p in ns.combine])
    elif ns.replay:
        seed, index = (int(x) for x in ns.replay.split(":"))
        with tempfile.TemporaryDirectory() as top:
            guard = Path(top) / "guard"
            make_guard(guard)
            case = make_case(seed, index, guard)
            print(case.describe())
            try:
                os.chdir(top)
                print(judge(case))
            finally:
                release_guard(guard)
        return
    else:
        started = time.monotonic()
        outcomes: list[Outcome] = []
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a timeout's TERM: keep the cases done
        try:
            fuzz(ns.seed, ns.start, ns.cases, limit_s=ns.limit, outcomes=outcomes)
        except KeyboardInterrupt:
            print(f"interrupted after {len(outcomes)} of {ns.cases} cases; the figure counts those", flush=True)
        figure = summary(outcomes, ns.seed, time.monotonic() - started)
        if ns.summary:
            Path(ns.summary).write_text(json.dumps(figure, indent=1))
    print(render(figure))
    totals = Counter(k for kinds in figure["per_target"].values() for k, n in kinds.items() for _ in range(n))
    sys.exit(1 if totals["traceback"] or totals["clobbered"] or totals["other"] else 0)


if __name__ == "__main__":
    main_()
