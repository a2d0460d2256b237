"""lora-budget: will this fine-tuning job fit on this GPU, and how fast will it run?

>>> import lora_budget
>>> result = lora_budget.plan("7b", "24GB")
>>> result.methods[2].method, result.methods[2].fits
('qlora', True)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def plan(*args: Any, **kwargs: Any) -> Any:
    """See :func:`lora_budget.api.plan`."""
    from lora_budget.api import plan as _plan

    return _plan(*args, **kwargs)


__all__ = ["plan", "__version__"]
