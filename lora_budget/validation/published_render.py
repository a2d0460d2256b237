"""Markdown for the published-measurements comparison (a section for reports/accuracy.md)."""

from __future__ import annotations

from collections import Counter

from lora_budget.units import GiB
from lora_budget.validation.published_rows import PublishedRow, SummaryLine

TORCHTUNE_NOTES = (
    "torchtune runs its own model code in pure bf16 (same tensor shapes as transformers) and its own "
    "LoRALinear with bf16 adapters, which the spec reproduces with `adapter_dtype=bf16` (no fp32 copy of "
    "each adapted input, unlike peft's default).",
    "Its loss is cross-entropy on its own fp32 logits (the decoder upcasts its output; older recipes "
    "take a shifted contiguous copy), not transformers' `ForCausalLMLoss`: the logits term can differ "
    "either way, most at Llama 3's 128k vocabulary.",
    "torchtune logs peak active, allocated and reserved memory; where a table does not say which it "
    "quotes (`unstated`), a reserved figure would sit above the planner's allocated peak.",
    "torchtune builds QLoRA by quantizing bf16 weights on the GPU; its QLoRA tutorial reports 9.13 GB "
    "reserved right after model init (notes of row 163), close to the 9.29 GB of training: if the stats "
    "were not reset after init, a published QLoRA peak can be an initialisation peak, not a step's.",
    "`max_truncation` rows pad each batch to its longest sample: the planner, run at the bound, gives "
    "an upper bound unless the longest batch reached it.",
)


def _gib(nbytes: int | None) -> str:
    return "" if nbytes is None else f"{nbytes / GiB:.2f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


LITGPT_NOTES = (
    "LitGPT (config_hub/finetune table, Lightning-AI/litgpt 00af8b0d) runs its own GPT code in bf16-true: "
    "bf16 weights, adapters and AdamW state, no autocast; q, k, v fused in one Linear with one LoRA "
    "dropout for the three.",
    "Its figure is `torch.cuda.max_memory_allocated() / 1e9` printed after `fit` (finetune/lora.py 234): "
    "the whole run, model load and the periodic validation and generation included.",
    "Its QLoRA pins bitsandbytes 0.42.0, whose MatMul4Bit keeps its input for backward, quantizes the "
    "lm_head too, and uses bnb PagedAdamW, whose state the allocator statistics do not see.",
)


def _framework_table(title: str, lines: list[SummaryLine]) -> list[str]:
    out = [
        f"**{title}**",
        "",
        "| framework | method | n | median error | median abs error | within +-10 % | worst abs error (row) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in lines:
        out.append(
            f"| {s.group} | {s.method} | {s.n} | {s.median_pct:+.1f} % | {s.median_abs_pct:.1f} % | "
            f"{100 * s.within_10:.0f} % | {s.worst_abs_pct:.1f} % ({s.worst_id}) |"
        )
    return out + [""]


def render(
    rows: list[PublishedRow],
    lines: list[SummaryLine],
    excluded: Counter,
    by_framework: tuple[list[SummaryLine], list[SummaryLine]] = ([], []),
) -> str:
    usable = [r for r in rows if r.usable]
    out = [
        "## Published measurements (independent check)",
        "",
        f"{len(rows)} peak-memory figures that torchtune, PEFT, the transformers docs, LitGPT and fms-acceleration "
        "(HF Trainer / TRL runs) measured and "
        "published (`lora_budget/validation/data/published-memory.csv` and `published-memory-added.csv`; "
        "provenance in the README beside them). Each usable row "
        "is mapped to a spec from what the row states; the planner's constants are never fitted to these rows. "
        "Error = (plan - published) / published: positive means the planner says more. The plan is the "
        "allocator-visible peak (bitsandbytes paged optimizer state excluded, as torch's statistics exclude it).",
        "",
        f"**Summary.** {len(rows)} rows: {len(usable)} mapped to a spec, {len(rows) - len(usable)} not "
        f"({', '.join(f'{label}: {n}' for label, n in excluded.most_common())}).",
        "",
        "| rows | method | n | median abs error | worst abs error (row) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for s in lines:
        out.append(
            f"| {s.group} | {s.method} | {s.n} | {s.median_abs_pct:.1f} % | {s.worst_abs_pct:.1f} % ({s.worst_id}) |"
        )
    out += ["", *_verdicts(rows), ""]
    every, clean = by_framework
    if every:
        out += ["### By framework", ""]
        out += _framework_table(
            "Every mapped, measured allocated-type row, caveats included, reliability low left out "
            "(what a user would see)",
            every,
        )
        out += _framework_table("Allocated rows with no material caveat (the summary above, by framework)", clean)
    out += [
        "### Every row",
        "",
        "Σ: counted in the allocated summary. Metric: `allocated` (max_memory_allocated or torchtune's peak active), "
        "`unstated` (torchtune table that does not name its statistic), `reserved`, `nvidia-smi`.",
        "",
        "| id | source | framework | model | method | b | s | ckpt | metric | published GiB | plan GiB | error % | Σ | "
        "caveats / reason |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        note = "; ".join(r.caveats) if r.usable else "not usable: " + "; ".join(r.reasons)
        if r.outcome == "OOM":
            note = "OOM published; " + note
        out.append(
            f"| {r.id} | {r.source} | {r.framework} | {_cell(r.model)} | {r.method} | {r.batch_size or ''} | "
            f"{r.seq_len or ''} | "
            f"{r.grad_ckpt} | {r.metric} | {_gib(r.published_bytes)} | {_gib(r.plan_bytes)} | {_pct(r.error_pct)} | "
            f"{'Σ' if r.in_summary else ''} | {_cell(note)} |"
        )
    out += _reserved_table(rows)
    out += ["", "### How torchtune's step differs from the planner's reference step", ""]
    out += [f"- {line}" for line in TORCHTUNE_NOTES]
    out += ["", "### How LitGPT's step differs from the planner's reference step", ""]
    out += [f"- {line}" for line in LITGPT_NOTES]
    return "\n".join(out) + "\n"


def _verdicts(rows: list[PublishedRow]) -> list[str]:
    out = []
    ooms = [r for r in rows if r.outcome == "OOM"]
    if ooms:
        said = []
        for r in ooms:
            if r.gpu_fits is None:
                why = "; ".join(r.reasons) if r.reasons else "GPU not in the catalog"
                said.append(f"{r.id} ({r.model} {r.method}): no planner verdict ({why})")
            else:
                said.append(f"{r.id}: planner says {'fits' if r.gpu_fits else 'does not fit'}")
        out.append("OOM rows: " + "; ".join(said) + ".")
    gaps = [r for r in rows if r.gap_bytes is not None]
    if gaps:
        lo, hi = min(r.gap_bytes for r in gaps), max(r.gap_bytes for r in gaps)
        out.append(
            f"Reserved/nvidia-smi rows with a plan: {len(gaps)}; published - plan from {_gib(lo)} to {_gib(hi)} GiB "
            "(table below; not an error, the planner is not calibrated for allocator reserve yet)."
        )
    measured = [r for r in rows if r.usable and r.outcome == "measured" and r.gpu_fits is not None]
    misses = [r for r in measured if not r.gpu_fits]
    out.append(
        f"Measured runs on a catalog GPU: {len(measured)}; the planner says {len(misses)} of them would not fit"
        + (f" ({', '.join(str(r.id) for r in misses)})." if misses else ".")
    )
    return out


def _reserved_table(rows: list[PublishedRow]) -> list[str]:
    chosen = [r for r in rows if r.metric in ("reserved", "nvidia-smi")]
    out = [
        "",
        "### Reserved and nvidia-smi figures",
        "",
        "The planner has no calibration for allocator reserve or the CUDA context yet, so these rows are not in the "
        "error summary. Gap = published - plan: what the allocator kept reserved beyond the allocated peak "
        "(and for nvidia-smi also the CUDA context, 0.5-1.3 GiB per the data README; 1343 MiB on the V100 rows).",
        "",
        "| id | model | method | b | s | metric | published GiB | plan GiB | gap GiB | gap % of published | note |",
        "| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in chosen:
        gap = r.gap_bytes
        share = "" if gap is None or not r.published_bytes else f"{100 * gap / r.published_bytes:.1f}"
        note = "; ".join(r.caveats) if r.usable else "not usable: " + "; ".join(r.reasons)
        out.append(
            f"| {r.id} | {_cell(r.model)} | {r.method} | {r.batch_size or ''} | {r.seq_len or ''} | {r.metric} | "
            f"{_gib(r.published_bytes)} | {_gib(r.plan_bytes)} | {_gib(gap)} | {share} | {_cell(note)} |"
        )
    return out
