"""The pytest plugin fails a test whose step exceeds its memory budget, and passes one within it.

Golden bytes, derived: a bias-free ``Linear(1024, 1024)`` in fp32 holds 1024 * 1024 * 4 bytes =
4 MiB of weights, and its weight gradient is the same 4 MiB. One step on a (64, 1024) fp32 input
allocates the input and the output, 64 * 1024 * 4 = 256 KiB each. So the peak is at least
8.5 MiB: a 1 MiB budget must fail and a 64 MiB budget must pass.
"""

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

STEPS = """
import pytest
import torch

W = 1024 * 1024 * 4  # weights of Linear(1024, 1024, bias=False) in fp32
X = 64 * 1024 * 4  # a (64, 1024) fp32 input


def make():
    torch.manual_seed(0)
    return torch.nn.Linear(1024, 1024, bias=False)


def step(model):
    model(torch.randn(64, 1024)).sum().backward()


@pytest.mark.memory_budget("1MiB")
def test_over_budget_marked(memory_budget):
    model = make()
    with memory_budget(model=model):
        step(model)


def test_over_budget_explicit(memory_budget):
    model = make()
    with memory_budget(2 * W, model=model):
        step(model)


@pytest.mark.memory_budget("64MiB")
def test_within_budget(memory_budget):
    model = make()
    with memory_budget(model=model) as m:
        step(model)
    assert m.breakdown["weights"] == W
    assert m.breakdown["gradients"] == W
    # the peak is the weight-gradient matmul of backward: weights, the new gradient and the input
    # (saved by mm); the output was freed after the sum. Scalars (loss, its gradient) take 512-byte
    # blocks (CUDA allocator rounding), a handful at most.
    assert 2 * W + X <= m.peak_bytes <= 2 * W + X + 8 * 512
"""


def _args() -> list[str]:
    """Load the plugin by name unless its entry point (pyproject.toml) is installed already."""
    installed = any(ep.value == "lora_budget.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "lora_budget.pytest_plugin"]


@pytest.fixture
def torch_ok():
    """Torch runs in a subprocess: an in-process pytester run would unload and re-import it."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch: pip install -e .[torch]")


@pytest.mark.torch
def test_plugin_fails_over_budget_and_passes_within(pytester, torch_ok):
    pytester.makepyfile(STEPS)
    # -rN: no short test summary, whose lines are cut at the terminal's width and so repeat the
    # message only on wide terminals; the failure reports below are printed whole at any width
    result = pytester.runpytest_subprocess("-rN", *_args())
    result.assert_outcomes(failed=2, passed=1)
    out = result.stdout.str()
    assert out.count("memory budget exceeded") == 2
    assert "budget 1.00 MiB (1,048,576 bytes)" in out
    assert "budget 8.00 MiB (8,388,608 bytes)" in out  # 2 W
    # the breakdown names the weights registered from the model, 1024 * 1024 * 4 bytes, and their gradient
    assert "weights 4.00 MiB" in out and "gradients 4.00 MiB" in out
    assert "test_within_budget PASSED" in out or "1 passed" in out


def test_missing_budget_is_a_usage_error(pytester):
    pytester.makepyfile(
        """
        def test_no_budget(memory_budget):
            with memory_budget():
                pass
        """
    )
    result = pytester.runpytest(*_args())
    result.assert_outcomes(failed=1)
    assert "give a budget" in result.stdout.str()


def test_plugin_import_is_light():
    code = (
        "import sys, lora_budget.pytest_plugin; "
        "print(sorted(m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_entry_point_declared():
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {"lora_budget": "lora_budget.pytest_plugin"}
