import json
from pathlib import Path

import pytest

from lora_budget.catalog import gpus as gpu_catalog
from lora_budget.catalog.gpus import resolve_gpu
from lora_budget.catalog.models import catalog, resolve_model
from lora_budget.catalog.shape import shape_from_config
from lora_budget.core.params import param_count
from lora_budget.errors import LoraBudgetError, UnknownNameError

GOLDEN = json.loads((Path(__file__).parent / "golden/param_counts.json").read_text())["param_counts"]
ENTRIES = catalog()


def test_catalog_size():
    assert len(ENTRIES) >= 30
    assert len({e["family"] for e in ENTRIES}) >= 9


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_entry_has_source_and_exact_count(entry):
    assert entry["source"].startswith("https://huggingface.co/") and entry["hf_id"] in entry["source"]
    # golden counts were derived from transformers itself (scripts/derive_param_counts.py)
    assert param_count(shape_from_config(entry["config"])) == GOLDEN[entry["name"]]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("7b", "Llama-2-7B"),
        ("13b", "Llama-2-13B"),
        ("8b", "Llama-3.1-8B"),
        ("70b", "Llama-3.1-70B"),
        ("meta-llama/Llama-2-7b-hf", "Llama-2-7B"),
        ("llama_2_7b", "Llama-2-7B"),
        ("LLAMA-2-7B-HF", "Llama-2-7B"),
        ("mistral-7b-v0.1", "Mistral-7B-v0.1"),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B"),
        ("gpt2-xl", "GPT-2-XL"),
    ],
)
def test_resolve_model(text, name):
    assert resolve_model(text).name == name


def test_published_parameter_counts():
    # Counts published on the models' Hugging Face pages (safetensors metadata).
    assert param_count(resolve_model("7b").shape) == 6_738_415_616
    assert param_count(resolve_model("gpt2").shape) == 124_439_808
    assert param_count(resolve_model("Mistral-7B-v0.1").shape) == 7_241_732_096


def test_unknown_model_suggests():
    with pytest.raises(UnknownNameError, match="closest: .*llama2-7b"):
        resolve_model("lama2-7b")


def test_config_path_and_dir(tmp_path):
    cfg = dict(next(e for e in ENTRIES if e["name"] == "Qwen2.5-0.5B")["config"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert param_count(resolve_model(str(tmp_path)).shape) == GOLDEN["Qwen2.5-0.5B"]
    assert param_count(resolve_model(str(tmp_path / "config.json")).shape) == GOLDEN["Qwen2.5-0.5B"]


def test_config_missing_field(tmp_path):
    cfg = dict(next(e for e in ENTRIES if e["name"] == "Llama-2-7B")["config"])
    del cfg["vocab_size"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoraBudgetError, match="missing the field 'vocab_size'"):
        resolve_model(str(tmp_path / "config.json"))


REQUIRED_GPUS = [
    "RTX 3090",
    "RTX 4090",
    "RTX 5090",
    "A10G",
    "L4",
    "T4",
    "L40S",
    "RTX 6000 Ada",
    "A100 40GB",
    "A100 80GB",
    "H100 PCIe",
    "H100 SXM",
    "H200",
    "B200",
    "MI300X",
]


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_required_gpus(name):
    gpu = resolve_gpu(name)
    assert gpu.name == name and gpu.source and gpu.memory_bytes > 8 * 2**30
    assert (gpu.peak_bf16_tflops or gpu.peak_fp16_tflops) > 0
    assert gpu.bf16 == (name not in ("T4",))


@pytest.mark.parametrize(
    ("text", "name", "nbytes"),
    [
        ("24GB", "24GB", 24 * 10**9),
        ("80GiB", "80GiB", 80 * 2**30),
        ("a100-80gb", "A100 80GB", 81920 * 2**20),
        ("RTX 4090", "RTX 4090", 24 * 2**30),
        ("h100", "H100 SXM", 81559 * 2**20),
    ],
)
def test_resolve_gpu(text, name, nbytes):
    gpu = resolve_gpu(text)
    assert (gpu.name, gpu.memory_bytes) == (name, nbytes)


def test_unknown_gpu():
    with pytest.raises(UnknownNameError, match="closest: RTX 3090"):
        resolve_gpu("rtx 3099")
    with pytest.raises(ValueError, match="unit"):
        resolve_gpu("24")


def test_gpu_catalog_unique_names():
    names = [g.name for g in gpu_catalog.catalog()]
    assert len(names) == len(set(names)) >= 15


def test_no_exact_name_is_another_entrys_forgiving_spelling():
    """Resolution answers an exact name (any case) before a forgiving spelling (``models._key``). The
    two orders can only differ where one entry's exact name, alias, HF id or variant is another
    entry's forgiving spelling: the catalog has no such pair (else resolving it would depend on
    which lookup runs first)."""
    from lora_budget.catalog import models
    from lora_budget.catalog.models import spellings

    exact = {}
    for entry in models._entries():
        for name in spellings(entry):
            exact.setdefault(name.lower(), entry["name"])
    clashes = [
        (entry["name"], name, exact[models._key(name)])
        for entry in models._entries()
        for name in spellings(entry)
        if exact.get(models._key(name), entry["name"]) != entry["name"]
    ]
    assert not clashes, clashes[:5]
