"""The README's `search` example runs in seconds and its front's commands plan set-ups that fit."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from click.testing import CliRunner

from lora_budget.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_search_example(tmp_path, monkeypatch):
    block = README[README.index("## search:") :]
    block = block[block.index("```\n") + 4 : block.index("\n```", block.index("```\n") + 4)]
    make_file, command = block.splitlines()
    assert make_file.startswith("printf 'gpu,usd_per_hour\\n")
    rows = make_file.split("'")[1].split("\\n")
    (tmp_path / "prices.csv").write_text("\n".join(rows), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = shlex.split(command)[1:]
    start = time.perf_counter()
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - start < 60  # "in seconds": a generous bound for a loaded 2-core machine
    front = json.loads(result.output)["front"]
    assert front and all(row["cost_usd"] is not None for row in front)
    for row in front:
        planned = CliRunner().invoke(main, [*shlex.split(row["command"])[1:], "--json"], catch_exceptions=False)
        assert planned.exit_code == 0, planned.output
        method = json.loads(planned.output)["methods"][0]
        assert method["fits"] and method["peak_bytes"] == row["peak_bytes"]
        assert round(method["wall_s"] / 3600, 4) == row["hours"]
