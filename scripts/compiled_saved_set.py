"""Measure what each decoder layer keeps for backward, eager vs torch.compile (``runtime/compiled.py``).

Real tensors on CPU at real width, one sequence of ``--seq`` tokens: a pack hook
(``torch.autograd.graph.saved_tensors_hooks``) sees every tensor autograd saves, in eager code and
in a compiled region (AOTAutograd's ``CompiledFunction`` saves its forward graph's extra outputs
through ``ctx.save_for_backward``) alike. Storages are counted once, parameters not at all. One
decoder layer's bytes are the difference between a 2-layer and a 1-layer cut of the model (layer 1
of 2 sees an input that needs a gradient, as every layer but the first does). Bytes per token are
exact per layer: every saved tensor here is token-proportional at sdpa (no s x s term).

    python scripts/compiled_saved_set.py --out lora_budget/validation/data/compiled-saved-set.json

Writes the JSON table (and prints it); the compiled rows also list the saved nodes of the layer's
partitioned forward graph (``runtime.compiled.saved_tensors``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CASES = (
    ("Llama-3.2-3B", "full", False),
    ("Llama-3.2-3B", "lora", False),
    ("Llama-3.2-3B", "full", True),
    ("Qwen2.5-7B", "full", False),
    ("Qwen2.5-7B", "lora", False),
)


def saved_bytes(spec, compile_: bool) -> tuple[int, list]:
    """Bytes autograd keeps at the end of the forward (and the compiled layers' saved nodes)."""
    import torch

    from lora_budget.runtime import compiled
    from lora_budget.runtime.build import build
    from lora_budget.runtime.loop import step_loss

    built = build(spec, device="cpu")
    graphs: list = []
    if compile_:
        compiled.compile_layers(built.model, graphs.append)
    params = {p.untyped_storage().data_ptr() for p in built.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    batch = torch.randint(0, spec.model.shape.vocab, (spec.batch_size, spec.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_loss(built.model, spec, batch)
    total = sum(seen.values())
    loss.backward()
    nodes = compiled.saved_tensors(graphs[0], 1) if graphs else []
    return total, nodes


def main() -> None:
    from tiny_models import truncated

    from lora_budget.spec import TrainSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for name, method, ckpt in CASES:
        row = {"model": name, "method": method, "grad_ckpt": ckpt, "seq_len": args.seq, "batch_size": 1}
        for compile_ in (False, True):
            per = {}
            for layers in (1, 2):
                spec = TrainSpec(
                    model=truncated(name, layers),
                    method=method,
                    batch_size=1,
                    seq_len=args.seq,
                    grad_ckpt=ckpt,
                    framework="plain",
                    compile=compile_,
                )
                per[layers], nodes = saved_bytes(spec, compile_)
            key = "compiled" if compile_ else "eager"
            row[f"{key}_layer_bytes_per_token"] = (per[2] - per[1]) / args.seq
            row[f"{key}_step_bytes_per_token_2_layers"] = per[2] / args.seq
            if compile_:
                row["compiled_saved_nodes"] = [
                    {"node": n, "op": op, "shape": list(shape), "dtype": dt, "bytes": b}
                    for n, op, shape, dt, b in nodes
                ]
        print(
            f"{name:14s} {method:5s} ckpt={ckpt!s:5s} per layer per token: "
            f"eager {row['eager_layer_bytes_per_token']:>9,.0f}  "
            f"compiled {row['compiled_layer_bytes_per_token']:>9,.0f}",
            flush=True,
        )
        rows.append(row)
        if args.out:  # after every row: a late failure keeps the rows measured so far
            _write(args.out, rows)


def _write(path: Path, rows: list) -> None:
    import torch
    import transformers

    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "script": "scripts/compiled_saved_set.py",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
