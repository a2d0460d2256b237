"""The trace is honest: on tiny models, fake tensors and real CPU tensors allocate byte for byte alike.

Same model, same loop, same tracker; the only difference is whether the tensors hold data. The
whole timeline (live bytes after every op) must be identical, not only the peak.
"""

import pytest

from tests.tiny_models import tiny_ref

pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
pytest.importorskip("transformers", reason="needs transformers: pip install -e .[torch]")
pytest.importorskip("peft", reason="needs peft: pip install -e .[torch]")
pytest.importorskip("bitsandbytes", reason="needs bitsandbytes: pip install -e .[torch]")

from lora_budget.spec import TrainSpec  # noqa: E402
from lora_budget.trace.engine import trace  # noqa: E402

pytestmark = pytest.mark.torch

CASES = [
    ("llama", "full", "adamw", False),
    ("llama", "lora", "adamw", False),
    ("llama", "qlora", "adamw", False),
    ("llama", "qlora", "paged_adamw8bit", True),
    ("llama", "lora", "adafactor", True),
    ("llama", "full", "sgd_momentum", True),
    ("qwen2", "lora", "adamw", True),
    ("gemma2", "qlora", "adamw", False),
    ("phi3", "lora", "adamw8bit", False),
    ("gpt2", "full", "adamw", False),
    ("gpt2", "qlora", "adamw", True),
]


@pytest.mark.parametrize(("arch", "method", "optimizer", "ckpt"), CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_fake_equals_real(arch, method, optimizer, ckpt):
    # GPT-2 runs the reference loop: the trace refuses CPU autocast for LayerNorm / tanh-GELU models
    framework = "plain" if arch == "gpt2" else "hf-trainer"
    spec = TrainSpec(
        model=tiny_ref(arch),
        method=method,
        optimizer=optimizer,
        grad_ckpt=ckpt,
        batch_size=2,
        seq_len=16,
        rank=4,
        framework=framework,
    )
    fake = trace(spec, fake=True, keep_timeline=True)
    real = trace(spec, fake=False, keep_timeline=True)
    assert real.real and not fake.real
    assert fake.breakdown == real.breakdown
    assert fake.peak_bytes == real.peak_bytes > 0
    assert [row[:2] for row in fake.timeline] == [row[:2] for row in real.timeline]
    # the peak is attributed completely: the categories add up to the peak
    assert sum(fake.breakdown.as_dict().values()) == fake.peak_bytes


def test_two_full_steps_reach_the_warm_start_peak():
    """The warm start (optimizer state made by one step on zero gradients) reaches the same peak
    as two full steps: nothing else a first step allocates survives it."""
    spec = TrainSpec(model=tiny_ref("llama"), method="lora", batch_size=2, seq_len=16, rank=4)
    warm = trace(spec, fake=True)
    two = trace(spec, fake=True, warm_start=False, steps=2)
    assert two.step_peaks[2] == warm.step_peaks[1]
    assert two.breakdown == warm.breakdown
