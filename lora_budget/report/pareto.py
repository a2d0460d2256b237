"""The cost-vs-time figure of a ``search``: every fitting set-up, and its Pareto front marked by method and GPU.

The data is ``search``'s own: :func:`lora_budget.search.space.walk` gives the set-ups and
:func:`lora_budget.search.space.pareto` the front, the same call ``lora-budget search`` prints; this
module only draws them. Cost is USD when every card searched has a price, else GPU-hours (as
``search`` ranks), so the figure says which on its axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lora_budget.records import dataclass
from lora_budget.report.style import OKABE_ITO, method_label, method_style, wrap_title
from lora_budget.search.space import SearchResult, Setup, pareto

GPU_COLOURS = tuple(
    OKABE_ITO[c] for c in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black")
)
"""Colours for the cards on the front, in order of first appearance (cheapest first); the marker
says the method, so a colour repeats only past seven cards without losing the point's identity."""

FRONT_GID = "pareto-front"
"""The ``gid`` of every artist that draws a front point (tests read the figure back by it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParetoData:
    """What the figure draws: a search's fitting set-ups and its front."""

    setups: tuple[Setup, ...]
    front: tuple[Setup, ...]
    """Cheapest first (``search.space.pareto``)."""
    by_cost: bool
    """True: the y axis is USD; False: GPU-hours (some card had no price)."""
    total_tokens: int
    notes: tuple[str, ...] = ()


def pareto_data(result: SearchResult, total_tokens: int, *, by_cost: bool) -> ParetoData:
    """The figure's data from ``walk``'s result: its set-ups and ``pareto``'s front of them."""
    return ParetoData(
        setups=result.setups,
        front=pareto(result.setups, by_cost),
        by_cost=by_cost,
        total_tokens=total_tokens,
        notes=(result.utilization_note,),
    )


def token_count(n: int) -> str:
    """``1B``, ``200M``, ``50k`` for a round count of tokens, else the digits (``123,456,789``)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size:,}{unit}"
    return f"{n:,}"


def _money(s: Setup, by_cost: bool) -> float:
    return s.cost_usd if by_cost else s.gpu_hours


def _group(s: Setup) -> tuple[str, str]:
    return s.spec.method, s.gpu.name


def front_label(front: Sequence[Setup], group: tuple[str, str]) -> str:
    """Legend entry of one method on one card: ``QLoRA, H100 SXM x 1, 8`` (its GPU counts on the front)."""
    counts = sorted({s.spec.gpus for s in front if _group(s) == group})
    return f"{method_label(group[0])}, {group[1]} x {', '.join(map(str, counts))}"


def pareto_figure(data: ParetoData, title: str) -> Any:
    """Cost (or GPU-hours) against wall hours on log axes: every fitting set-up as a grey dot, the
    front as a staircase with one marker per method (shape) and card (colour), the legend giving each
    one's GPU counts; the cheapest and the fastest set-ups are named."""
    from lora_budget.report.figures import _figure, _style

    if not data.front:
        raise ValueError("pareto_figure needs a search with at least one set-up on its front")
    with _style():
        fig = _figure(3.6)
        ax = fig.add_subplot()
        pool = [s for s in data.setups if not data.by_cost or s.cost_usd is not None]
        ax.plot(
            [s.hours for s in pool],
            [_money(s, data.by_cost) for s in pool],
            linestyle="none",
            marker="o",
            markersize=1.2,
            color="#BBBBBB",
            rasterized=True,
            label=f"fitting set-ups ({len(pool):,})",
        )
        stair = sorted(data.front, key=lambda s: s.hours)
        ax.plot(
            [s.hours for s in stair],
            [_money(s, data.by_cost) for s in stair],
            drawstyle="steps-post",
            color="black",
            linewidth=0.7,
            label="Pareto front",
        )
        cards = list(dict.fromkeys(s.gpu.name for s in data.front))
        colour = {name: GPU_COLOURS[i % len(GPU_COLOURS)] for i, name in enumerate(cards)}
        for group in dict.fromkeys(_group(s) for s in data.front):
            pts = [s for s in data.front if _group(s) == group]
            _, marker, _ = method_style(group[0])
            (line,) = ax.plot(
                [s.hours for s in pts],
                [_money(s, data.by_cost) for s in pts],
                linestyle="none",
                marker=marker,
                markersize=4.5,
                color=colour[group[1]],
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=front_label(data.front, group),
                zorder=3,
            )
            line.set_gid(FRONT_GID)
        cheapest = data.front[0]
        fastest = min(data.front, key=lambda s: (s.hours, _money(s, data.by_cost)))
        names = (
            [(cheapest, "cheapest"), (fastest, "fastest")]
            if fastest is not cheapest
            else [(cheapest, "cheapest and fastest")]
        )
        for s, word in names:
            ax.annotate(word, (s.hours, _money(s, data.by_cost)), xytext=(4, 3), textcoords="offset points",
                        fontsize=6, style="italic")  # fmt: skip
        from matplotlib.ticker import LogLocator, StrMethodFormatter

        for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
            scale("log")
            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            axis.set_major_formatter(StrMethodFormatter("{x:,g}"))
            axis.set_minor_formatter(StrMethodFormatter("{x:,g}"))
        ax.tick_params(which="both", length=2.5)  # labelled minor ticks sit level with the major ones
        ax.set_xlabel("wall time (hours)")
        ax.set_ylabel("cost (USD)" if data.by_cost else "GPU-hours (no prices given)")
        ax.set_title(wrap_title(title))
        ax.grid(True, which="major", linewidth=0.3, alpha=0.5)
        fig.legend(loc="outside lower center", ncol=2, frameon=False)
    return fig


def pareto_table(data: ParetoData) -> tuple[list[str], list[list[Any]]]:
    """Every plotted point: the front first (cheapest first), then the other fitting set-ups."""
    head = ["on_front", "hours", "gpu_hours", "cost_usd", "gpu", "gpus", "strategy", "offload", "method",
            "rank", "optimizer", "grad_ckpt", "batch_size", "grad_accum", "seq_len", "peak_bytes"]  # fmt: skip
    on_front = {id(s) for s in data.front}
    rest = [s for s in data.setups if id(s) not in on_front]

    def row(s: Setup, front: bool) -> list[Any]:
        p = s.spec
        return [front, s.hours, s.gpu_hours, s.cost_usd, s.gpu.name, p.gpus, p.strategy, p.offload, p.method,
                None if p.method == "full" else p.rank, p.optimizer, p.grad_ckpt, p.batch_size, p.grad_accum,
                p.seq_len, s.peak_bytes]  # fmt: skip

    return head, [row(s, True) for s in data.front] + [row(s, False) for s in rest]


def front_points(fig: Any) -> Sequence[tuple[float, float]]:
    """The (hours, cost) points drawn as the front, read back from the figure's artists."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid() == FRONT_GID:
                out += list(zip(line.get_xdata(), line.get_ydata(), strict=True))
    return out
