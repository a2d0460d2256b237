"""The planner's parameter count equals what transformers instantiates, for every catalog entry."""

import pytest

from lora_budget.catalog.models import catalog
from lora_budget.catalog.shape import shape_from_config
from lora_budget.core.params import inventory, param_count

torch = pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
transformers = pytest.importorskip("transformers", reason="needs transformers: pip install -e .[torch]")

pytestmark = pytest.mark.torch
ENTRIES = catalog()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_count_matches_transformers(entry):
    cfg = dict(entry["config"])
    if isinstance(cfg.get("text_config"), dict):  # multimodal: the planner counts the text tower only
        cfg = dict(cfg["text_config"])
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    shape = shape_from_config(entry["config"])
    assert param_count(shape) == sum(p.numel() for p in model.parameters())
    # the multiset of tensor sizes matches too, not only the sum
    ours = sorted(t.numel for t in inventory(shape) for _ in range(t.count))
    theirs = sorted(p.numel() for p in model.parameters())
    assert ours == theirs
