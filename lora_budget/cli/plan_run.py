"""``plan``'s body, shared by the click command (cli/plan_cmd.py) and the click-free start (cli/fast.py).

click is imported here only to raise a usage error; the click command reports it (the fast path hands
any error back to click, which runs the command again and reports it as it always has).
"""

from __future__ import annotations

from lora_budget.cli.optspec import spec_kwargs
from lora_budget.cli.values import parse_batch, parse_count

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


def _usage(message: str) -> Exception:
    import click

    return click.UsageError(message)


def _bad(message: str, hint: str) -> Exception:
    import click

    return click.BadParameter(message, param_hint=hint)


def plan_output(kw: dict[str, Any], *, typed_epochs: bool, notes: list[str]) -> tuple[str, bool]:
    """The text ``plan`` prints for its parsed options ``kw`` (``config_file`` already applied) and whether a
    newline follows it; ``typed_epochs``: --epochs was on the command line (not from a --config file),
    ``notes``: the config file's notes, printed first."""
    from lora_budget.api import plan

    as_json, as_csv, as_markdown = kw["as_json"], kw["as_csv"], kw["as_markdown"]
    tokens, dataset_tokens, epochs = kw["tokens"], kw["dataset_tokens"], kw["epochs"]
    if sum((as_json, as_csv, as_markdown)) > 1:
        raise _usage("choose one of --json, --csv, --markdown")
    if tokens is not None and (dataset_tokens is not None or (epochs is not None and typed_epochs)):
        raise _usage("give --tokens, or --dataset-tokens with --epochs, not both")
    if epochs is not None and dataset_tokens is None:
        if typed_epochs:
            raise _usage("--epochs needs --dataset-tokens (tokens in one pass over the data)")
        epochs = None  # from a --config file; used only with --dataset-tokens
    epochs, price, inter_node_gbps = _finite_numbers(epochs, kw["price"], kw["inter_node_gbps"])
    if epochs is not None and not epochs > 0:
        raise _bad(f"must be positive, got {epochs}", "--epochs")
    total_tokens = None
    if tokens is not None:
        total_tokens = parse_count(tokens, "--tokens")
    elif dataset_tokens is not None:
        total_tokens = max(1, round(parse_count(dataset_tokens, "--dataset-tokens") * (epochs or 1)))
    if price is not None and not price > 0:
        raise _bad(f"must be a positive USD per GPU-hour, got {price}", "--price")
    if inter_node_gbps is not None and not inter_node_gbps > 0:
        raise _bad(f"must be a positive Gb/s per GPU, got {inter_node_gbps}", "--inter-node-gbps")
    batch_size = parse_batch(kw["batch_size"])  # read before --overhead: with both wrong, this error is shown
    overhead = kw["overhead"]
    if overhead.strip() in ("0", "0B", "0b"):
        overhead_bytes = 0
    else:
        from lora_budget.units import parse_size

        overhead_bytes = parse_size(overhead)
    result = plan(
        kw["model"],
        kw["gpu"],
        kw["method"],
        batch_size=batch_size,
        overhead_bytes=overhead_bytes,
        total_tokens=total_tokens,
        price_usd_per_h=price,
        **({"inter_node_gbps": inter_node_gbps} if inter_node_gbps is not None else {}),
        **spec_kwargs(kw),
    )
    if notes:
        from lora_budget import records

        result = records.replace(result, notes=(*notes, *result.notes))
    if as_json:
        import json

        return json.dumps(result.to_dict(), indent=2), True
    from lora_budget.cli import render

    if as_csv:
        return render.render_csv(result), False
    if as_markdown:
        return render.render_markdown(result), True
    return render.render_table(result), True


def _finite_numbers(epochs: Any, price: Any, gbps: Any) -> tuple[Any, Any, Any]:
    """inf/nan/1e-300 pass click's float type; they are refused here, naming the option.
    Bounds: 1e6 epochs, $1e6 per GPU-hour, and 0.01-1e5 Gb/s (today's adapters run 100-800)."""
    from lora_budget.units import finite_number

    return (
        None if epochs is None else finite_number(epochs, "--epochs", high=1e6),
        None if price is None else finite_number(price, "--price", high=1e6, low_open=False),
        None if gbps is None else finite_number(gbps, "--inter-node-gbps", low=0.01, high=1e5, low_open=False),
    )
