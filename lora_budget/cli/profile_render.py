"""Text tables for profiles, the profile store and calibration (printing only, no computing)."""

from __future__ import annotations

from typing import Any

from lora_budget.units import fmt_bytes


def _b(value: int | None) -> str:
    return "-" if value is None else fmt_bytes(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def row_cells(row: dict[str, Any]) -> list[str]:
    spec = row["spec"]
    status = row["status"]
    cells = [
        spec["method"],
        str(spec["batch_size"]),
        str(spec["seq_len"]),
        "on" if spec["grad_ckpt"] else "off",
    ]
    if status != "ok":
        verdict = "OOM: does not fit" if status == "oom" else "error"
        return [*cells, verdict, _b(row.get("peak_allocated_bytes")), "-", "-", _b(row["predicted_peak_bytes"])] + [
            "-"
        ] * 4
    alloc, plan = row["peak_allocated_bytes"], row["predicted_peak_bytes"]
    losses = row["losses"]
    return [
        *cells,
        "ok",
        _b(alloc),
        _b(row.get("peak_reserved_bytes")),
        _b(row.get("nvml_process_bytes")),
        _b(plan),
        f"{(plan - alloc) / alloc * 100:+.1f}%" if alloc else "-",
        f"{row['step_s']:.3f}",
        f"{row['tokens_per_s']:,.0f}" if row.get("tokens_per_s") else "-",
        f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-",
    ]


ROW_HEADER = [
    "method",
    "b",
    "s",
    "ckpt",
    "status",
    "peak alloc",
    "reserved",
    "NVML",
    "plan",
    "plan err",
    "step s",
    "tokens/s",
    "loss first -> last",
]


def render_profile(profile: Any) -> str:
    env = profile.environment
    versions = env["versions"]
    device = env["gpu_name"] or f"CPU ({env.get('cpu') or 'unknown'})"
    memory = f", {fmt_bytes(env['gpu_memory_bytes'])}" if env.get("gpu_memory_bytes") else ""
    head = [
        f"model: {profile.model['name']}",
        f"device: {device}{memory}; driver {env.get('driver_version') or '-'}, CUDA {env.get('cuda_version') or '-'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"steps: {profile.settings.get('warmup')} warm-up + {profile.settings.get('steps')} measured, "
        f"lr {profile.settings.get('lr')}, data: {profile.settings.get('data')}",
    ]
    if profile.path is not None:
        head.insert(0, f"profile: {profile.path}")
    body = _table(ROW_HEADER, [row_cells(r) for r in profile.rows])
    notes = []
    if env["device"] == "cpu":
        notes.append(
            "note: CPU rows count real tensors with the tracker (CUDA allocator rounding); reserved and NVML memory "
            "exist only on CUDA, and CPU step times include the tracker's bookkeeping"
        )
    if profile.interrupted:
        notes.append(f"note: interrupted after {len(profile.rows)} of {profile.planned} configurations")
    for r in profile.rows:
        if r["status"] == "error":
            notes.append(
                f"error ({r['spec']['method']} b={r['spec']['batch_size']} s={r['spec']['seq_len']}): {r['error']}"
            )
        elif r["status"] == "ok" and len(r["losses"]) > 1 and not r["losses"][-1] < r["losses"][0]:
            notes.append(f"warning: the loss did not fall for {r['spec']['method']} b={r['spec']['batch_size']}")
    return "\n".join([*head, "", body, *notes])


def render_store(profiles: list[Any]) -> str:
    rows = []
    for p in profiles:
        counts = {s: sum(r["status"] == s for r in p.rows) for s in ("ok", "oom", "error")}
        rows.append(
            [
                str(p.path),
                p.device_label,
                p.model["name"],
                f"{counts['ok']}/{counts['oom']}/{counts['error']}" + (" (interrupted)" if p.interrupted else ""),
                ",".join(sorted({r["spec"]["method"] for r in p.rows})),
                p.environment["versions"].get("torch") or "-",
                p.created_utc,
            ]
        )
    return _table(["file", "device", "model", "ok/oom/error", "methods", "torch", "created (UTC)"], rows)


def render_calibration(entries: list[Any]) -> str:
    rows = [
        [
            e.gpu_name,
            e.catalog_gpu or "(no catalog card)",
            f"{e.torch} / {e.cuda}",
            str(e.rows),
            e.target,
            _b(e.residual_bytes),
            _b(e.reserve_bytes),
            _b(e.context_bytes),
            _b(e.overhead_bytes),
            f"+/- {_b(e.error_bytes)}",
            f"{e.plan_vs_allocated_median_pct:.2f}% / {e.plan_vs_allocated_worst_pct:.2f}%",
            f"{e.calibrated_median_pct:.2f}%",
        ]
        for e in entries
    ]
    header = [
        "GPU",
        "card",
        "torch / CUDA",
        "rows",
        "target",
        "residual",
        "reserve",
        "context",
        "overhead",
        "error bar",
        "plan vs alloc (median/worst)",
        "calibrated median",
    ]
    return _table(header, rows)
