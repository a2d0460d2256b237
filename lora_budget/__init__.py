"""lora-budget: will this fine-tuning job fit on this GPU, and how fast will it run?

>>> import lora_budget
>>> result = lora_budget.plan("7b", "24GB")
>>> result.methods[2].method, result.methods[2].fits
('qlora', True)
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``plan`` is :func:`lora_budget.api.plan` itself, imported on first use (PEP 562): importing the
    package (every ``lora-budget`` start does) stays free, and a call pays no wrapper or import."""
    if name == "plan":
        from lora_budget.api import plan

        globals()["plan"] = plan
        return plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["plan", "__version__"]
