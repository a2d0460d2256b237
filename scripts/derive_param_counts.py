"""Derive tests/golden/param_counts.json from transformers itself, independently of the planner.

For every catalog entry: build the transformers model from its config on the meta device (no
memory, no download) and count ``sum(p.numel() for p in model.parameters())``. Run it again
after adding a catalog entry:  python scripts/derive_param_counts.py
"""

import json
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    catalog = json.loads((ROOT / "lora_budget/catalog/models.json").read_text())
    counts = {}
    for entry in catalog["models"]:
        cfg = dict(entry["config"])
        if isinstance(cfg.get("text_config"), dict):  # multimodal: the planner counts the text tower only
            cfg = dict(cfg["text_config"])
        config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        counts[entry["name"]] = sum(p.numel() for p in model.parameters())
    out = {
        "derived_with": {"torch": torch.__version__, "transformers": transformers.__version__},
        "how": "sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()) on the meta device",
        "param_counts": counts,
    }
    (ROOT / "tests/golden/param_counts.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
