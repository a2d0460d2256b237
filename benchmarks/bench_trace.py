"""How fast the trace engine is, and how much RAM it takes: a 7B and a 70B LoRA step.

Each trace runs in a fresh Python process. Printed per model: the trace itself (build + warm
start + one traced step, as `trace()` reports it), the whole process including importing torch,
transformers and peft, and the process's peak resident memory (``ru_maxrss``).

Targets (DESIGN.md, on a 2-core machine): 7B <= 15 s, 70B <= 90 s, peak RSS <= 3 GB.

    python benchmarks/bench_trace.py [--models 7b,70b] [--method lora] [--seq-len 2048]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = """
import json, sys, time
from lora_budget.catalog.models import resolve_model
from lora_budget.spec import TrainSpec
from lora_budget.trace.engine import trace
spec = TrainSpec(model=resolve_model(sys.argv[1]), method=sys.argv[2], seq_len=int(sys.argv[3]))
r = trace(spec)
print(json.dumps({"trace_s": r.wall_s, "ops": r.ops, "peak_bytes": r.peak_bytes}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="7b,70b")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    print(f"{'model':<8}{'method':<8}{'ops':>9}{'trace s':>10}{'process s':>11}{'peak RSS GB':>13}{'peak GiB':>10}")
    for model in args.models.split(","):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, model, args.method, str(args.seq_len)],
            capture_output=True,
            text=True,
            check=True,
        )
        process_s = time.perf_counter() - started
        # ru_maxrss of the largest child so far, in KiB on Linux; children run one at a time,
        # so the 70B figure is the larger of the two (it always is, and the 7B one comes first)
        rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{model:<8}{args.method:<8}{out['ops']:>9,}{out['trace_s']:>10.1f}{process_s:>11.1f}"
            f"{rss_gb:>13.2f}{out['peak_bytes'] / 2**30:>10.2f}"
        )


if __name__ == "__main__":
    main()
