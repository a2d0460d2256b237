"""``lora-budget plan`` without click (cli/fast.py): the same options, the same output, click for the rest.

The fast path parses a plain plan line from the option records click builds its options from
(cli/optspec.py); these tests hold it to click's own parse of the same line, and the printed bytes
to the click command's.
"""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_budget.cli import main
from lora_budget.cli.fast import parse_plan
from lora_budget.cli.optspec import PLAN_OPTIONS, SPEC_OPTIONS
from lora_budget.cli.plan_cmd import plan_cmd

ALL = (*SPEC_OPTIONS, *PLAN_OPTIONS)


def click_params(args: list[str]) -> dict:
    with plan_cmd.make_context("plan", list(args)) as ctx:
        return dict(ctx.params)


@pytest.fixture(autouse=True)
def _no_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # --offline sets it for the run; restored after


def test_every_record_is_the_click_option_built_from_it():
    params = {p.name: p for p in plan_cmd.params}
    assert [p.name for p in plan_cmd.params] == [o.dest for o in ALL]
    for opt in ALL:
        param = params[opt.dest]
        assert set(opt.flags) == {*param.opts, *param.secondary_opts}, opt.dest
        if opt.choices is not None:
            assert tuple(param.type.choices) == tuple(opt.choices)


PLAIN_LINES = [
    [],
    ["--model", "7b", "--gpu", "24GB"],
    ["-m", "8b", "-g", "rtx4090", "--method", "qlora", "--batch-size", "auto"],
    ["--gpu=rtx4090", "--model=8b", "--no-grad-ckpt", "--double-quant", "--rank", "64", "--targets", "attn"],
    ["--grad-ckpt", "--no-grad-ckpt", "--grad-ckpt"],  # the last one wins, as in click
    ["--seq-len", " 4096 ", "--lora-dropout", "1e-1", "--epochs", "2", "--dataset-tokens", "1M"],
    ["--json", "--csv"],  # parsed; the body refuses the pair
    ["--offline", "--autocast", "--no-kbit-prep", "--vllm", "--objective", "grpo", "--completion-len", "128"],
    ["--price", "inf", "--inter-node-gbps", "1e-300", "--gpus", "0", "--model", ""],
    ["-s", "+512", "-b", "4", "-r", "1_6"],
]


@pytest.mark.parametrize("args", PLAIN_LINES, ids=lambda a: " ".join(a) or "(none)")
def test_a_plain_line_parses_as_click_parses_it(args):
    parsed = parse_plan(args)
    assert parsed is not None
    kw, given_names = parsed
    assert kw == click_params(args)
    assert given_names == {o.dest for o in ALL if any(a.split("=")[0] in o.flags for a in args)}


CLICK_LINES = [
    ["-h"],
    ["--help"],
    ["--config", "x.yml"],
    ["-b4"],
    ["-m7b"],
    ["--bogus"],
    ["extra"],
    ["--quant", "nf8"],
    ["--seq-len", "abc"],
    ["--epochs", "two"],
    ["--grad-ckpt=yes"],
    ["-m"],
    ["-m", "--json"],
    ["--", "--json"],
]


@pytest.mark.parametrize("args", CLICK_LINES, ids=" ".join)
def test_anything_else_is_left_to_click(args):
    assert parse_plan(args) is None


def _value(opt):
    if opt.choices is not None:
        return st.sampled_from(opt.choices)
    if opt.type == "int":
        return st.integers(-5, 10**6).map(str)
    if opt.type == "float":
        return st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
    return st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=12)


@st.composite
def plan_lines(draw):
    """A plan line of drawn options and values, and the values drawn."""
    args: list[str] = []
    values: list[str] = []
    for opt in draw(st.lists(st.sampled_from([o for o in ALL if o.type != "path"]), max_size=8)):
        flag = draw(st.sampled_from(sorted(opt.flags)))
        if opt.flags[flag] is not None:
            args.append(flag)
            continue
        value = draw(_value(opt))
        values.append(value)
        args += [f"{flag}={value}"] if flag.startswith("--") and draw(st.booleans()) else [flag, value]
    return args, values


@settings(max_examples=150, deadline=None)
@given(plan_lines())
def test_drawn_lines_parse_as_click_parses_them(line):
    """Where the fast path answers, its keywords are click's; where it does not, a value looks like
    an option (click's to judge) or click refuses the line."""
    args, values = line
    parsed = parse_plan(args)
    if parsed is not None:
        assert parsed[0] == click_params(args)
        return
    if not any(v.startswith("-") for v in values):
        with pytest.raises(click.UsageError):
            click_params(args)


def _script(args: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"sys.argv = ['lora-budget', *{args!r}]\n"
        "from lora_budget.cli import run\n"
        "code = run()\n"
        "print('click imported:', 'click' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--model", "7b", "--gpu", "24GB"],
        ["plan", "-m", "70b", "-g", "h100", "--json"],
        ["plan", "-m", "7b", "-g", "rtx4090", "--method", "qlora", "--tokens", "100M", "--price", "0.40", "--csv"],
        ["plan", "--markdown", "--gpus", "4", "--strategy", "fsdp", "--grad-ckpt"],
    ],
    ids=" ".join,
)
def test_plan_prints_the_click_commands_bytes_without_importing_click(args):
    fast = _script(args)
    assert fast.returncode == 0, fast.stderr
    assert fast.stderr == "click imported: False\n"
    slow = CliRunner().invoke(main, args, catch_exceptions=False)
    assert slow.exit_code == 0
    assert fast.stdout == slow.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--model", "nope"], "Error: unknown model 'nope'"),
        (["plan", "--json", "--csv"], "Error: choose one of --json, --csv, --markdown"),
        (["plan", "--tokens", "abc"], "Error: Invalid value for --tokens: 'abc' is not a token count"),
        (["plan", "--quant", "nf8"], "Error: Invalid value for '--quant': 'nf8' is not one of 'nf4', 'fp4'."),
    ],
)
def test_an_error_is_clicks_own_report(args, message):
    out = _script(args)
    slow = CliRunner().invoke(main, args)
    assert out.returncode == slow.exit_code == 2
    assert out.stdout == ""
    assert message in out.stderr
    assert out.stderr.replace("click imported: True\n", "") == slow.stderr.replace("main plan", "lora-budget plan")


def test_main_is_still_the_click_group():
    assert isinstance(main, click.Group) and main.get_command(click.Context(main), "plan") is plan_cmd


def test_a_hub_repo_id_goes_to_click_before_anything_is_resolved(monkeypatch):
    """Resolving org/name may ask the Hub; were it to fail, click's rerun would ask a second time."""
    from lora_budget.cli import fast, plan_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the fast path planned a Hub repo id")

    monkeypatch.setattr(plan_run, "plan_output", must_not_run)
    assert fast.fast_plan(["--model", "meta-llama/Llama-2-7b-hf"]) is None


def _modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stderr.split("\n")[-2].split())


@pytest.mark.parametrize(
    "args", [["plan", "--model", "7b", "--gpu", "24GB"], ["plan", "-m", "70b", "-g", "h100", "--json"]], ids=" ".join
)
def test_plan_imports_none_of_the_slow_standard_modules(args):
    """The cold start (benchmarks/bench_plan.py cold): beyond what the interpreter's own start loads, a
    plan imports neither click, dataclasses (nor inspect, which it imports), typing nor pathlib
    (records.py, catalog/models.py)."""
    bare = _modules("import sys")
    plan = _modules(
        f"import io, sys, contextlib\nsys.argv = ['lora-budget', *{args!r}]\nfrom lora_budget.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    run()"
    )
    added = plan - bare
    assert not added & {"click", "dataclasses", "inspect", "typing", "pathlib"}, sorted(added)
    assert "lora_budget.api" in added


def test_the_fast_path_runs_without_the_garbage_collector_and_restores_it(monkeypatch, capsys):
    """``run`` turns the cyclic collector off for plan's fast path only, and puts it back as it was
    (on, or off where the caller had it off) whether the plan answers or hands an error to click. In a
    caller's process it freezes nothing (only the console script, which exits next, does)."""
    import gc

    from lora_budget.cli import fast, run

    seen = []
    answer = fast.fast_plan
    monkeypatch.setattr(fast, "fast_plan", lambda args: seen.append(gc.isenabled()) or answer(args))
    frozen = gc.get_freeze_count()
    for collecting in (True, False):
        (gc.enable if collecting else gc.disable)()
        try:
            for args in (["plan", "--model", "7b", "--gpu", "24GB"], ["plan", "--model", "no-such-x", "--gpu", "24GB"]):
                monkeypatch.setattr(sys, "argv", ["lora-budget", *args])
                try:
                    code = run()
                except SystemExit as exc:  # the second: click reports the unknown model and exits 2
                    code = exc.code
                assert gc.isenabled() is collecting, args
                assert code == (0 if args[2] == "7b" else 2)
        finally:
            gc.enable()
    assert seen == [False] * 4  # the fast path ran with the collector off each time
    assert gc.get_freeze_count() == frozen
    assert "LoRA" in capsys.readouterr().out


def test_the_console_script_freezes_before_it_exits():
    """Run as the program (``python -m lora_budget``), the fast path freezes what it made before exit."""
    code = (
        "import gc, sys, runpy\nsys.argv = ['lora-budget', 'plan', '--model', '7b', '--gpu', '24GB']\n"
        "import lora_budget.cli.fast as fast\nfrozen = []\nfreeze = gc.freeze\n"
        "gc.freeze = lambda: (frozen.append(1), freeze())\n"
        "try:\n    runpy.run_module('lora_budget', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    print('exit', exc.code, 'frozen', len(frozen), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "exit 0 frozen 1" in out.stderr, out.stderr[-2000:]
