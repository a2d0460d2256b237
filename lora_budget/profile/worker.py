"""Run one profile configuration in a fresh process: ``python -m lora_budget.profile.worker``.

Reads one JSON job on stdin (``{"model", "spec", "settings", "tokens"}``) and writes one JSON
line on stdout: ``{"environment": ..., "measurement": ...}``. A fresh process per configuration
means one run's allocator cache, fragmentation and CUDA context cannot change the next one's
numbers. An out-of-memory error is a result (status ``oom``), not a crash; any other exception
is an ``error`` row with its message. ``--env`` prints only the environment record.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from lora_budget.profile.measure import Measurement, Settings, failed, measure
from lora_budget.profile.specio import model_from_dict, spec_from_dict


def run_job(job: dict[str, Any], measure_fn: Callable[..., Measurement] = measure) -> dict[str, Any]:
    """One configuration; ``measure_fn`` is replaceable so tests can inject failures."""
    from lora_budget.profile.environment import environment

    settings = Settings(**job["settings"])
    env = environment(settings.device)
    spec = spec_from_dict(job["spec"], model_from_dict(job["model"]))
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            result = measure_fn(spec, settings, job.get("tokens"))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, OOM included
        result = failed(settings, exc, time.perf_counter() - started)
    return {"environment": env, "measurement": result.to_dict()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--env"]:
        from lora_budget.profile.environment import environment

        print(json.dumps({"environment": environment(argv[1] if len(argv) > 1 else "cpu")}))
        return 0
    job = json.loads(sys.stdin.read())
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # library chatter must not mix with the result
    try:
        out = run_job(job)
    finally:
        sys.stdout = real_stdout
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
