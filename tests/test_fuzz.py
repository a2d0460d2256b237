"""Property-based fuzz (hypothesis) over every command's options, with scripts/fuzz.py's judge:
exit code in {0, 1, 2}, no traceback, one error line, nothing outside the temp folder changed."""

from __future__ import annotations

import importlib.util
import random
import sys
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_spec = importlib.util.spec_from_file_location("fuzz", Path(__file__).parents[1] / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz"] = fuzz  # dataclasses look their module up there
_spec.loader.exec_module(fuzz)

NAMES = [n for n in fuzz.COMMANDS if n not in fuzz.SKIP]


@pytest.fixture(scope="module")
def guard():
    with tempfile.TemporaryDirectory() as top:
        folder = Path(top) / "guard"
        fuzz.make_guard(folder)
        fuzz.GUARD[:] = [folder]
        yield folder
        (folder / "ro").chmod(0o755)


@pytest.mark.slow  # unverified at commit time: a case can run a real validate/trace (see the report)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**32 - 1), text=st.text(max_size=30))
def test_every_command_fails_cleanly(guard, name, seed, text):
    values = [*fuzz.nasty(guard), text]
    args = fuzz.case_args(random.Random(seed), name, values)
    outcome = fuzz.run_case(name, args, guard)
    assert outcome.problem == "", (name, args, outcome.problem)
