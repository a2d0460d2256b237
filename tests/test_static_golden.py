"""Golden byte counts derived by hand, not read from the planner.

Llama-2-7B (config: h=4096, L=32, i=11008, V=32000, untied) has 6,738,415,616 parameters
(published on its model card). Every one of its tensors is a multiple of 512 bytes in bf16,
so allocator rounding adds nothing and bf16 weights are exactly 2 bytes x parameters.
"""

from lora_budget.core.static import static_memory
from lora_budget.spec import TrainSpec

P_7B = 6_738_415_616
LINEARS_7B = [4096 * 4096] * 4 + [11008 * 4096] * 3  # q, k, v, o, gate, up, down per layer
NON_LINEAR_7B = 2 * 32000 * 4096 + (2 * 32 + 1) * 4096  # embed + lm_head + 65 RMSNorm weights


def _r(n):  # caching-allocator rounding to 512 bytes
    return -(-n // 512) * 512


def test_bf16_weights(llama7b):
    st = static_memory(TrainSpec(model=llama7b, method="full"))
    assert st.weights == 2 * P_7B == 13_476_831_232
    assert st.gradients == 2 * P_7B
    # fused AdamW: two bf16 moments + one 4-byte step tensor (512-byte block) per parameter tensor
    n_tensors = 2 + 32 * 9 + 1
    assert st.optimizer == 4 * P_7B + 512 * n_tensors


def test_mixed_precision_is_16_bytes_per_param(llama7b):
    st = static_memory(TrainSpec(model=llama7b, method="full", master_weights=True))
    n_tensors = 2 + 32 * 9 + 1
    assert st.weights + st.master_weights + st.gradients + st.optimizer == 16 * P_7B + 512 * n_tensors


def test_nf4_without_double_quant(llama7b):
    st = static_memory(TrainSpec(model=llama7b, method="qlora", double_quant=False))
    # 4 bits per weight packed in uint8; fp32 absmax per 64 weights; 16-entry fp32 code per tensor
    assert st.weights == 32 * sum(n // 2 for n in LINEARS_7B) + 2 * NON_LINEAR_7B
    assert st.quant_state == 32 * sum(_r(n // 64 * 4) + 512 for n in LINEARS_7B)


def test_nf4_double_quant_bits_per_weight(llama7b):
    st = static_memory(TrainSpec(model=llama7b, method="qlora", double_quant=True))
    # uint8 absmax per 64 weights; fp32 absmax per 256 of those; fp32 offset; 16-entry code;
    # a private copy of the 256-entry fp32 dynamic map in each nested state (bitsandbytes 0.50's
    # quantize_blockwise copies it); plus the cached 1 KiB map those copies come from
    per_layer = sum(_r(n // 64) + _r(n // 64 // 256 * 4) + 512 + 512 + 1024 for n in LINEARS_7B)
    assert st.quant_state == 32 * per_layer + 1024
    # DESIGN.md: 4 + 8/64 + 32/(64*256) bits per weight, before per-tensor allocator blocks
    n = 4096 * 4096
    bits = (n // 2 + n // 64 + n // 64 // 256 * 4) * 8 / n
    assert bits == 4 + 8 / 64 + 32 / (64 * 256)


def test_lora_adapter_bytes(llama7b):
    spec = TrainSpec(model=llama7b, method="lora", rank=16, targets="all-linear")
    st = static_memory(spec)
    # A: r x in, B: out x r, fp32, per linear per layer
    per_layer = sum(16 * (i + o) for i, o in [(4096, 4096)] * 4 + [(4096, 11008)] * 2 + [(11008, 4096)])
    assert st.trainable_params == 32 * per_layer == 39_976_960
    assert st.adapter == 4 * 32 * per_layer
    assert st.gradients == st.adapter
    assert st.optimizer == 2 * st.adapter + 512 * 32 * 14


def test_adamw8bit_state(llama7b):
    st = static_memory(TrainSpec(model=llama7b, method="lora", rank=16, optimizer="adamw8bit"))
    # every adapter tensor has >= 4096 elements: 2 uint8 moments + 2 fp32 absmax per 256; 2 shared 1 KiB maps
    sizes = [16 * 4096] * 8 + [16 * 11008] * 3 + [16 * 4096] * 3  # A and B of the 7 linears
    per_layer = sum(2 * _r(n) + 2 * _r(-(-n // 256) * 4) for n in sizes)
    assert st.optimizer == 32 * per_layer + 2048


def test_gradients_made_before_a_layers_attention_kernel(llama7b):
    """Backward reaches a layer's attention kernel after its MLP and its o projection: those
    gradients exist by then, q/k/v's do not (the Falcon trace shows the MLP's alive there)."""
    full = static_memory(TrainSpec(model=llama7b, method="full"))
    # o_proj 4096 x 4096 and gate/up/down 11008 x 4096, bf16
    assert full.layer_gradients_before_attention == 2 * (4096 * 4096 + 3 * 11008 * 4096) == 304_087_040
    lora = static_memory(TrainSpec(model=llama7b, method="lora", rank=16, targets="all-linear"))
    # fp32 A (16 x in) and B (out x 16) of o_proj, gate_proj, up_proj, down_proj
    a_b = [16 * 4096 + 4096 * 16] + [16 * 4096 + 11008 * 16] * 2 + [16 * 11008 + 4096 * 16]
    assert lora.layer_gradients_before_attention == 4 * sum(a_b) == 3_424_256
    attn_only = static_memory(TrainSpec(model=llama7b, method="lora", rank=16, targets="q_proj,v_proj"))
    assert attn_only.layer_gradients_before_attention == 0
