"""The activation walk against real autograd: tiny models, real tensors, CPU.

Every tensor autograd saves during the forward is caught with ``saved_tensors_hooks``; storages
are counted once and parameters are excluded. The planner's saved bytes for the same spec
(``once + first layer + (L - 1) x layer``, plus the 4 V bytes per token log_softmax keeps) must
match. Eager attention runs the same Python code on CPU as on CUDA; sdpa on CPU picks CPU kernels
whose saved tensors differ from CUDA flash in a few cases (GPT-2's dropout), so those are
checked only where the kernels agree.
"""

import pytest

from lora_budget.catalog.shape import shape_from_config
from lora_budget.core.model import peak_model
from lora_budget.spec import ModelRef, TrainSpec
from tests.tiny_models import tiny_config

torch = pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
transformers = pytest.importorskip("transformers", reason="needs transformers: pip install -e .[torch]")
peft = pytest.importorskip("peft", reason="needs peft: pip install -e .[torch]")

pytestmark = pytest.mark.torch

# three layers, so the planner's (L - 1) x layer term is exercised
CONFIGS = {arch: tiny_config(arch, layers=3) for arch in ("llama", "qwen2", "qwen3", "olmo2", "gemma2", "gpt2")}


def measure(cfg, method, adapter_dtype, attn, b=2, s=16):
    raw = {k: v for k, v in cfg.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(cfg["model_type"], **raw)
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if method == "lora":
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
        model = peft.get_peft_model(model, lora)
        if adapter_dtype == "bf16":
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.data = p.data.to(torch.bfloat16)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(3, cfg["vocab_size"], (b, s))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    measured = sum(saved.values())

    shape = shape_from_config(cfg)
    ref = ModelRef(name=cfg["model_type"], hf_id="", source="test", shape=shape)
    kw = dict(adapter_dtype=adapter_dtype, rank=4, attn=attn, batch_size=b, seq_len=s, framework="plain")
    spec = TrainSpec(model=ref, method=method, **kw)
    acts = peak_model(spec).acts
    T = b * s
    planned = T * (acts.once.at(s) + acts.first_layer.at(s) + (shape.layers - 1) * acts.layer.at(s))
    planned += T * 4 * shape.vocab  # log_softmax output kept for backward
    return measured, planned


CASES = [
    (arch, method, ad, attn)
    for arch in ("llama", "qwen2", "qwen3")
    for method, ad in (("full", "fp32"), ("lora", "fp32"), ("lora", "bf16"))
    for attn in ("eager", "sdpa")
] + [
    ("olmo2", "full", "fp32", "sdpa"),  # its RMSNorm keeps the fp32 product when the weight trains
    ("olmo2", "lora", "fp32", "sdpa"),
    ("olmo2", "lora", "bf16", "eager"),
    ("gpt2", "full", "fp32", "eager"),
    ("gpt2", "lora", "fp32", "eager"),
    ("gpt2", "lora", "bf16", "eager"),
]


@pytest.mark.parametrize(("arch", "method", "adapter_dtype", "attn"), CASES, ids=["-".join(c) for c in CASES])
def test_saved_bytes_match_autograd(arch, method, adapter_dtype, attn):
    measured, planned = measure(CONFIGS[arch], method, adapter_dtype, attn)
    # 2 %: the remaining difference is small per-token tensors (RoPE cos/sin in fp32, dropout RNG)
    assert planned == pytest.approx(measured, rel=0.02)


KNOWN_GAPS = [
    ("gemma2", "lora", "fp32", "eager", "Gemma 2's sandwich norms / soft-capping: planner is ~5-7% low"),
]


@pytest.mark.parametrize(
    ("arch", "method", "adapter_dtype", "attn", "why"), KNOWN_GAPS, ids=[g[0] + "-" + g[1] for g in KNOWN_GAPS]
)
def test_known_gaps_still_open(arch, method, adapter_dtype, attn, why):
    """Documented gaps (README, Limitations). When one closes this test fails: move it to CASES."""
    measured, planned = measure(CONFIGS[arch], method, adapter_dtype, attn)
    assert abs(planned - measured) / measured > 0.02, f"gap closed: {why}"
