"""Printing plan results: a human table, Markdown and CSV. Computing lives in lora_budget.api."""

from __future__ import annotations

from lora_budget.breakdown import CATEGORIES
from lora_budget.core.params import param_count
from lora_budget.describe import spec_settings
from lora_budget.units import GiB, fmt_gib

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from lora_budget.api import MethodPlan, PlanResult
    from lora_budget.spec import TrainSpec


LABELS = {
    "full": "full",
    "lora": "LoRA",
    "qlora": "QLoRA",
    "lora8bit": "LoRA 8-bit",
}


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _settings(m: MethodPlan) -> str:
    return spec_settings(m.spec)


def _code(m: MethodPlan) -> str:
    """The training code line: framework and loss kernel (both change what the step allocates)."""
    s = m.spec
    what = {
        "plain": "the reference loop",
        "hf-trainer": "transformers Trainer",
        "litgpt": "LitGPT finetune lora, bf16-true",
        "torchtune": "torchtune recipe",
    }[s.framework]
    loss = s.loss_kernel if s.objective == "sft" else f"{s.objective} (TRL 1.9 trainer's own)"
    compiled = ", torch.compile (decoder layers)" if s.compile else ""
    return f"framework {s.framework} ({what}), loss {loss}{compiled}; {_libraries(s)}"


def _libraries(s: TrainSpec) -> str:
    """The library releases the plan assumes (``--transformers``, ``--torch``, ``--bitsandbytes``); the
    optimizer they give is on the Step line."""
    return f"assumes transformers {s.transformers}, torch {s.torch}, bitsandbytes {s.bitsandbytes}"


def _experts(methods: list[MethodPlan]) -> str | None:
    """What a quantized MoE's experts are under the assumed transformers release, or None."""
    quantized = [m.spec for m in methods if m.spec.method in ("qlora", "lora8bit") and m.spec.framework != "litgpt"]
    if not quantized or not quantized[0].model.shape.is_moe:
        return None
    if quantized[0].experts_quantized:
        return "MoE experts quantized too: transformers 4.x builds them from nn.Linear modules bitsandbytes replaces"
    return (
        "MoE experts stay 16-bit under QLoRA / 8-bit: transformers 5 stores them as 3-D parameters bitsandbytes "
        "does not quantize (--transformers 4.57 plans 4.x's quantized nn.Linear experts)"
    )


def render_table(result: PlanResult) -> str:
    methods = result.methods
    gpu = result.gpu
    lines = [
        f"Model  {result.model.name} ({_params(param_count(result.model.shape))} parameters)",
        f"GPU    {gpu.name}: {fmt_gib(gpu.memory_bytes)} ({gpu.memory_bytes / 1e9:.1f} GB)",
    ]
    setups = {(m.spec.gpus, m.spec.strategy, m.spec.offload) for m in methods if m.spec.gpus > 1}
    for n, strategy, offload in sorted(setups):
        off = f", {offload} offloaded to CPU" if offload != "none" else ""
        lines.append(f"GPUs   {n} x {gpu.name}, {strategy}{off}: memory, verdict and headroom are per GPU")
    shared = {_settings(m).split(", r=")[0] for m in methods}
    if len(shared) == 1:
        lines.append(f"Step   {shared.pop()}")
    codes = {_code(m) for m in methods}
    if len(codes) == 1:
        lines.append(f"Code   {codes.pop()}")
    experts = _experts(methods)
    if experts:
        lines.append(f"MoE    {experts}")
    goals = {m.method: m.spec.objective_note for m in methods if m.spec.objective_note}
    if len(set(goals.values())) == 1:
        lines.append(f"Goal   {goals.popitem()[1]}")
    else:
        lines += [f"Goal   {LABELS[method]}: {note}" for method, note in goals.items()]
    lines.append("")
    width = 12
    head = f"{'memory (GiB)':<16}" + "".join(f"{LABELS[m.method]:>{width}}" for m in methods)
    lines += [head, "-" * len(head)]
    for cat in CATEGORIES:
        values = [m.breakdown.as_dict()[cat] for m in methods]
        if not any(values) and cat not in ("weights", "activations"):
            continue
        lines.append(f"{cat:<16}" + "".join(f"{v / GiB:>{width}.2f}" for v in values))
    lines.append("-" * len(head))
    lines.append(f"{'peak':<16}" + "".join(f"{m.peak_bytes / GiB:>{width}.2f}" for m in methods))
    lines.append(f"{'peak during':<16}" + "".join(f"{m.breakdown.phase:>{width}}" for m in methods))
    lines.append(f"{'verdict':<16}" + "".join(f"{('FITS' if m.fits else 'NO FIT'):>{width}}" for m in methods))
    lines.append(f"{'headroom':<16}" + "".join(f"{m.headroom_bytes / GiB:>{width}.2f}" for m in methods))
    lines.append(
        f"{'max batch':<16}" + "".join(f"{m.max_batch_size if m.max_batch_size else 'none':>{width}}" for m in methods)
    )
    lines.append(
        f"{'max seq len':<16}" + "".join(f"{m.max_seq_len if m.max_seq_len else 'none':>{width}}" for m in methods)
    )
    lines += _speed_rows(methods, width)
    lines.append("")
    for m in methods:
        name = LABELS[m.method]
        if m.fits:
            extra = f", {fmt_gib(m.paged_bytes)} of optimizer state paged" if m.paged_bytes else ""
            lines.append(
                f"{name}: FITS, {fmt_gib(m.peak_bytes)} peak, {fmt_gib(m.headroom_bytes)} free{extra}; "
                f"up to batch {m.max_batch_size} at seq {m.spec.seq_len}, "
                f"or seq {m.max_seq_len} at batch {m.spec.batch_size}."
            )
            continue
        over = fmt_gib(-m.headroom_bytes)
        lines.append(f"{name}: DOES NOT FIT, {fmt_gib(m.peak_bytes)} peak, {over} over.")
        fixes = [f"{s.change} ({fmt_gib(s.peak_bytes)})" for s in m.suggestions[:3]]
        if m.smallest_gpu:
            fixes.append(f"a GPU with more memory: {m.smallest_gpu} or larger")
        if fixes:
            lines.append("  to fit: " + "; or ".join(fixes))
        else:
            lines.append("  no single change fits it, and no catalog GPU holds it: shard it across GPUs")
    for m in methods:
        t = m.time
        if t and t.wall_s is not None and t.tokens_per_s:
            cost = f", ${t.cost_usd:,.2f} at ${t.price_usd_per_h:,.2f}/h" if t.cost_usd is not None else ""
            name = LABELS[m.method] + ("" if m.fits else " (if it fit)")
            lines.append(
                f"{name}: {t.total_tokens:,} tokens in {t.wall_s / 3600:,.1f} h "
                f"at {t.tokens_per_s:,.0f} tokens/s ({t.step_s:.3f} s per step of {t.tokens_per_step:,} tokens){cost}."
            )
    for m in methods:
        for w in m.warnings:
            lines.append(f"warning ({LABELS[m.method]}): {w}")
    if result.notes:
        lines.append("")
        lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _cell(value: float | None, fmt: str, width: int) -> str:
    return f"{('n/a' if value is None else format(value, fmt)):>{width}}"


def _speed_rows(methods: tuple[MethodPlan, ...], width: int) -> list[str]:
    """tokens/s, step time and, with a token count, wall time and cost; nothing if speed was not asked for."""
    times = [m.time for m in methods]
    if not any(t and t.step_s is not None for t in times):
        return []
    rows = [
        f"{'tokens/s':<16}" + "".join(_cell(t.tokens_per_s if t else None, ",.0f", width) for t in times),
        f"{'step time (s)':<16}" + "".join(_cell(t.step_s if t else None, ".3f", width) for t in times),
        f"{'MFU':<16}" + "".join(_cell(t.mfu if t else None, ".0%", width) for t in times),
    ]
    if any(m.spec.gpus > 1 for m in methods):
        rows.append(
            f"{'comm (GB/step)':<16}" + "".join(_cell(t.comm_bytes / 1e9 if t else None, ",.2f", width) for t in times)
        )
        if any(t and t.offload_bytes for t in times):
            rows.append(
                f"{'offload (GB)':<16}"
                + "".join(_cell(t.offload_bytes / 1e9 if t else None, ",.2f", width) for t in times)
            )
        rows.append(f"{'comm (s)':<16}" + "".join(_cell(t.comm_s if t else None, ".3f", width) for t in times))
        rows.append(
            f"{'comm exposed (s)':<16}" + "".join(_cell(t.comm_exposed_s if t else None, ".3f", width) for t in times)
        )
    if any(t and t.wall_s is not None for t in times):
        rows.append(
            f"{'time (h)':<16}"
            + "".join(_cell(t.wall_s / 3600 if t and t.wall_s else None, ",.1f", width) for t in times)
        )
    if any(t and t.cost_usd is not None for t in times):
        rows.append(f"{'cost (USD)':<16}" + "".join(_cell(t.cost_usd if t else None, ",.2f", width) for t in times))
    return rows


def render_markdown(result: PlanResult) -> str:
    methods = result.methods
    out = [
        f"**{result.model.name}** on **{result.gpu.name}** ({fmt_gib(result.gpu.memory_bytes)})",
        "",
        "| memory (GiB) | " + " | ".join(LABELS[m.method] for m in methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for cat in CATEGORIES:
        out.append(f"| {cat} | " + " | ".join(f"{m.breakdown.as_dict()[cat] / GiB:.2f}" for m in methods) + " |")
    out.append("| **peak** | " + " | ".join(f"**{m.peak_bytes / GiB:.2f}**" for m in methods) + " |")
    out.append("| fits | " + " | ".join("yes" if m.fits else "no" for m in methods) + " |")
    out.append("| max batch | " + " | ".join(str(m.max_batch_size) for m in methods) + " |")
    out.append("| max seq len | " + " | ".join(str(m.max_seq_len) for m in methods) + " |")
    for key, label, fmt in (
        ("tokens_per_s", "tokens/s", ",.0f"),
        ("step_s", "step time (s)", ".3f"),
        ("comm_bytes", "comm (GB/step)", ",.2f"),
        ("comm_s", "comm (s)", ".3f"),
        ("comm_exposed_s", "comm exposed (s)", ".3f"),
        ("wall_s", "time (h)", ",.1f"),
        ("cost_usd", "cost (USD)", ",.2f"),
    ):
        values = [_speed_value(m, key) for m in methods]
        if any(v is not None for v in values):
            if key == "wall_s":
                values = [v / 3600 if v is not None else None for v in values]
            if key == "comm_bytes":
                values = [v / 1e9 if v is not None else None for v in values]
            out.append(f"| {label} | " + " | ".join("n/a" if v is None else format(v, fmt) for v in values) + " |")
    return "\n".join(out)


def _speed_value(m: MethodPlan, key: str) -> float | None:
    """A speed figure of one method; the communication ones only for a multi-GPU spec."""
    if key.startswith("comm"):
        return getattr(m.time, key) if m.time is not None and m.spec.gpus > 1 else None
    return m.to_dict()[key]


def render_csv(result: PlanResult) -> str:
    import csv
    import io

    buf = io.StringIO()
    fields = [
        "model",
        "gpu",
        "method",
        "fits",
        "peak_bytes",
        "headroom_bytes",
        *[f"{c}_bytes" for c in CATEGORIES],
        "max_batch_size",
        "max_seq_len",
        "batch_size",
        "seq_len",
        "gpus",
        "strategy",
        "offload",
        "tokens_per_s",
        "step_s",
        "wall_s",
        "cost_usd",
        "comm_bytes",
        "comm_s",
        "comm_exposed_s",
    ]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for m in result.methods:
        d = m.to_dict()
        row = {k: d[k] for k in fields if k in d}
        row.update(model=result.model.name, gpu=result.gpu.name, batch_size=m.spec.batch_size, seq_len=m.spec.seq_len)
        row.update(gpus=m.spec.gpus, strategy=m.spec.strategy, offload=m.spec.offload)
        row.update({k: _speed_value(m, k) for k in ("comm_bytes", "comm_s", "comm_exposed_s")})
        writer.writerow(row)
    return buf.getvalue()
