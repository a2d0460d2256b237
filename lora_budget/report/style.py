"""One look for every figure: colour-blind-safe colours, single-column size, one font.

Colours are the Okabe-Ito palette (M. Okabe and K. Ito, "Color Universal Design (CUD): how to
make figures and presentations that are friendly to colorblind people", 2008,
https://jfly.uni-koeln.de/color/), which stays distinguishable under protanopia, deuteranopia and
tritanopia. It has eight colours and a breakdown has ten categories, so the two rarest ones
(temporaries, overhead) are greys with a hatch, and every line also differs by marker and dash,
so figures survive greyscale printing.
"""

from __future__ import annotations

import textwrap
from typing import Any

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

CATEGORY_STYLE: dict[str, tuple[str, str]] = {
    # category: (colour, hatch); fixed, so a category has the same colour in every figure
    "weights": (OKABE_ITO["blue"], ""),
    "quant_state": (OKABE_ITO["sky_blue"], ""),
    "adapter": (OKABE_ITO["bluish_green"], ""),
    "master_weights": (OKABE_ITO["reddish_purple"], ""),
    "gradients": (OKABE_ITO["vermillion"], ""),
    "optimizer": (OKABE_ITO["orange"], ""),
    "activations": (OKABE_ITO["yellow"], ""),
    "logits": (OKABE_ITO["black"], ""),
    "temporaries": ("#BBBBBB", "////"),
    "overhead": ("#777777", "xxxx"),
}

METHOD_STYLE: dict[str, tuple[str, str, str]] = {
    # method: (colour, marker, dash)
    "full": (OKABE_ITO["vermillion"], "s", "-"),
    "lora": (OKABE_ITO["blue"], "o", "--"),
    "qlora": (OKABE_ITO["bluish_green"], "^", "-."),
    "lora8bit": (OKABE_ITO["orange"], "D", ":"),
}

METHOD_LABEL = {"full": "full", "lora": "LoRA", "qlora": "QLoRA", "lora8bit": "LoRA 8-bit"}

PHASE_SHADE = {
    "forward": "#56B4E933",
    "loss": "#00000022",
    "backward": "#E69F0033",
    "optimizer": "#009E7333",
    "zero_grad": "#CC79A722",
}

COLUMN_WIDTH_IN = 3.5
"""Single-column width of two-column paper templates (ACM, IEEE, NeurIPS-style)."""

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs on every machine
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "hatch.linewidth": 0.5,
    "pdf.fonttype": 42,  # embed TrueType, not Type 3 (journals reject Type 3)
    "svg.fonttype": "none",  # text stays text: searchable, editable, small
    "svg.hashsalt": "lora-budget",  # stable ids: the same figure gives the same file
    "savefig.dpi": 300,
}


def method_label(method: str) -> str:
    return METHOD_LABEL.get(method, method)


def method_style(method: str) -> tuple[str, str, str]:
    return METHOD_STYLE.get(method, (OKABE_ITO["reddish_purple"], "v", "-"))


def wrap_title(text: str, width: int = 50) -> str:
    """A caption-ready title, wrapped to fit a single column at 8 pt."""
    return "\n".join(textwrap.wrap(text, width))
