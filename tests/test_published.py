"""The published-measurements check: data integrity, units, row -> spec mapping, report output.

Expected values come from the CSV rows themselves (read here, not from the code under test) and
from unit arithmetic written out in the tests.
"""

from __future__ import annotations

import csv
import re

import pytest

from lora_budget.validation import published as P
from lora_budget.validation.published_map import map_row, metric_kind, published_bytes

DATA_README = P.DATA.with_name("README.md")


@pytest.fixture(scope="module")
def raw() -> dict[int, dict[str, str]]:
    out = {}
    for path in (P.DATA, P.ADDED):
        with open(path, newline="", encoding="utf-8") as f:
            out.update({int(r["id"]): r for r in csv.DictReader(f)})
    return out


ORIGINAL = 54
"""Rows in the team's shared file."""
LITGPT_HUB, FMS, LITGPT_RESOURCE = 53, 75, 31
"""Added rows: 53 LitGPT config-hub lines (the README table at Lightning-AI/litgpt 00af8b0d has 53
config lines); fms-acceleration's reference CSVs: at 24bdadb 36 allocated rows (19 with figures, 17
runs without train metrics, taken as OOM: full fine-tuning of Mixtral and Llama-2-70B on 1 and 2
GPUs at 2 batch sizes each, 8; Mixtral LoRA on 1 GPU, 2; Llama-2-70B LoRA, 4; Llama-2-70B QLoRA,
3), at c3a069c 19 and at b6c1455 20 allocated rows with figures; lit-gpt's resource table: 20
single-GPU lines (Llama 2 7B/13B, phi-1.5, StableLM Alpha 3B) and 11 multi-GPU ones."""
ADDED = LITGPT_HUB + FMS + LITGPT_RESOURCE


@pytest.fixture(scope="module")
def rows() -> list[P.PublishedRow]:
    return P.compare_published()


def test_csv_has_54_rows_and_the_documented_columns(raw):
    assert len(raw) == ORIGINAL + ADDED
    with open(P.DATA, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert tuple(header) == tuple(P.COLUMNS)
    with open(P.ADDED, newline="", encoding="utf-8") as f:
        added_header = next(csv.reader(f))
    assert tuple(added_header) == tuple(P.COLUMNS) + P.MECHANISM_COLUMNS
    documented = set(re.findall(r"`([a-z_]+)`", DATA_README.read_text()))
    assert [c for c in added_header if c not in documented] == []
    assert len(P.load_rows()) == ORIGINAL + ADDED
    assert len(P.load_rows(added=None)) == ORIGINAL


def test_repeated_id_across_files_is_refused(tmp_path):
    dup = tmp_path / "added.csv"
    dup.write_text(P.ADDED.read_text().replace('"1001",', '"96",', 1))
    with pytest.raises(P.LoraBudgetError, match="repeat"):
        P.load_rows(added=dup)


def test_csv_is_the_shared_file_unchanged():
    import hashlib

    digest = hashlib.sha256(P.DATA.read_bytes()).hexdigest()
    assert digest in DATA_README.read_text()


def test_gb_row_converted_by_hand(raw):
    row = raw[131]  # torchtune README: 17.18 "GB", torchtune's older logs divide by 1e9
    assert (row["memory_value"], row["memory_unit"]) == ("17.18", "GB(1e9)")
    assert published_bytes(row) == 17_180_000_000
    # 17.18e9 / 2**30 = 16.00011... GiB, the CSV's memory_gib says 16.0
    assert abs(17_180_000_000 / 1_073_741_824 - 16.0) < 0.001
    assert abs(published_bytes(row) / 2**30 - float(row["memory_gib"])) < 0.001


def test_mib_row_converted_by_hand(raw):
    row = raw[214]  # transformers docs: nvidia-smi 14949 MiB
    assert (row["memory_value"], row["memory_unit"]) == ("14949", "MiB")
    assert published_bytes(row) == 14949 * 1_048_576
    assert abs(14949 / 1024 - float(row["memory_gib"])) < 0.001


def test_every_memory_gib_matches_value_and_unit(raw):
    for row in raw.values():
        nbytes = published_bytes(row)
        if nbytes is None:
            assert row["memory_gib"] == "null" and row["outcome"] == "OOM"
            continue
        assert abs(nbytes / 2**30 - float(row["memory_gib"])) < 0.0006, row["id"]


def test_every_row_has_a_spec_or_a_reason(rows):
    assert len(rows) == ORIGINAL + ADDED
    for r in rows:
        assert (r.spec is None) == bool(r.reasons), r.id
        assert (r.plan_bytes is None) == (r.spec is None), r.id


def test_reasons_for_known_unusable_rows(rows):
    by_id = {r.id: r for r in rows}
    assert any("seq2seq" in x for x in by_id[96].reasons)  # T0_3B
    assert any("BERT" in x for x in by_id[214].reasons)
    # torchtune's FSDP rows are planned per GPU (row 130: LoRA on 2 GPUs)
    assert by_id[130].spec is not None and (by_id[130].spec.gpus, by_id[130].spec.strategy) == (2, "fsdp")
    assert any("FSDP2" in c for c in by_id[130].caveats)
    assert by_id[146].spec.offload == "params"  # fsdp_cpu_offload=True
    assert any("DeepSpeed" in x for x in by_id[104].reasons)
    # BLOOM: planned when the catalog has it (trace-derived), else the reason says it is missing
    from lora_budget.catalog.models import resolve_model

    try:
        resolve_model("bigscience/bloomz-7b1")
    except P.LoraBudgetError:
        assert any("not in the catalog" in x for x in by_id[103].reasons)
    else:
        assert by_id[103].spec is not None and by_id[103].spec.targets == "query_key_value"


def test_metric_kinds(raw):
    # row 129's metric mentions "reserved" only to say the README does not name the statistic
    assert "reserved" in raw[129]["memory_metric"]
    assert metric_kind(raw[129]) == "unstated"
    assert metric_kind(raw[150]) == "allocated"  # active_bytes.all.peak
    assert metric_kind(raw[159]) == "reserved"
    assert metric_kind(raw[214]) == "nvidia-smi"
    assert metric_kind(raw[96]) == "allocated"  # torch.cuda.max_memory_allocated


def test_lora_row_131_field_by_field(raw):
    row = raw[131]
    spec = map_row(row).spec
    assert spec.model.hf_id == row["hf_model_id"]
    assert spec.method == row["method"] == "lora"
    assert spec.rank == int(row["lora_rank"]) and spec.alpha == int(row["lora_alpha"])
    assert spec.targets == row["lora_targets"] == "q_proj,v_proj"  # torchtune and transformers names agree
    assert spec.batch_size == int(row["batch_size_per_gpu"])
    assert spec.seq_len == int(row["seq_len"])
    assert spec.grad_accum == int(row["grad_accum"])
    assert spec.grad_ckpt is (row["gradient_checkpointing"] == "true")
    assert row["compute_precision"].startswith("bf16") and spec.dtype == "bf16"
    assert row["trainable_precision"] == "bf16" and spec.adapter_dtype == "bf16"
    assert row["optimizer"] == "torch.optim.AdamW" and spec.optimizer == "adamw"
    assert row["attention_impl"] == "torch SDPA" and spec.attn == "sdpa"


def test_qlora_row_129_field_by_field(raw):
    row = raw[129]
    spec = map_row(row).spec
    assert spec.model.name == "Llama-2-7B" and row["hf_model_id"] == "meta-llama/Llama-2-7b-hf"
    assert spec.method == row["method"] == "qlora"
    # q,k,v,output_proj (= o_proj) + MLP (w1,w2,w3 = gate, down, up): every decoder linear of Llama
    assert row["lora_targets"].startswith("q_proj,k_proj,v_proj,output_proj + MLP")
    assert spec.targets == "all-linear"
    assert spec.rank == int(row["lora_rank"]) == 8
    assert row["trainable_precision"].startswith("bf16 LoRA params") and spec.adapter_dtype == "bf16"
    assert (spec.batch_size, spec.seq_len, spec.grad_accum) == (
        int(row["batch_size_per_gpu"]),
        int(row["seq_len"]),
        int(row["grad_accum"]),
    )
    assert spec.grad_ckpt and spec.quant == "nf4" and spec.dtype == "bf16"


def test_full_rows_150_and_156_field_by_field(raw):
    row = raw[150]
    spec = map_row(row).spec
    assert spec.model.name == "Llama-3.2-3B" and row["hf_model_id"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert spec.method == "full" and spec.dtype == "bf16" and not spec.master_weights
    assert row["optimizer"] == "torch.optim.AdamW" and spec.optimizer == "adamw"
    assert (spec.batch_size, spec.seq_len) == (int(row["batch_size_per_gpu"]), int(row["seq_len"])) == (2, 4096)
    assert row["gradient_checkpointing"] == "false" and not spec.grad_ckpt
    row = raw[156]
    assert "PagedAdamW8bit" in row["optimizer"]
    assert map_row(row).spec.optimizer == "paged_adamw8bit"


def test_caveats_keep_rows_out_of_the_summary(rows):
    by_id = {r.id: r for r in rows}
    # 150 and 151 differ only in torch.compile (row data), which the spec now expresses (test_compile.py);
    # a compiled QLoRA run (158) keeps the caveat: compile is not planned there
    assert by_id[150].in_summary and by_id[151].in_summary and by_id[151].spec.compile
    assert not by_id[158].in_summary and any("compile" in c for c in by_id[158].caveats)
    assert not by_id[149].in_summary  # reliability low
    assert not by_id[159].in_summary and by_id[159].gap_bytes is not None  # reserved: a gap, not an error
    assert by_id[159].error_pct is None


def test_paged_state_is_left_out_of_the_plan_compared(rows):
    from lora_budget.core.model import peak_model

    r = next(r for r in rows if r.id == 156)
    model = peak_model(r.spec)
    full = model.breakdown(r.spec.batch_size, r.spec.seq_len).peak_bytes
    assert r.paged_bytes == model.static.optimizer_pageable > 0
    assert r.plan_bytes == full - r.paged_bytes


def test_markdown_has_a_line_per_row(rows):
    text = P.published_markdown(rows)
    every = text.split("### Every row")[1].split("###")[0]
    ids = [int(m) for m in re.findall(r"^\| (\d+) \|", every, flags=re.MULTILINE)]
    assert ids == [r.id for r in rows]
    assert "median abs error" in text


def test_csv_output_has_a_line_per_row(rows):
    lines = list(csv.reader(P.published_csv(rows).splitlines()))
    assert tuple(lines[0]) == tuple(P.CSV_FIELDS)
    assert [int(line[0]) for line in lines[1:]] == [r.id for r in rows]


def test_script_writes_and_refuses_to_overwrite(tmp_path, capsys):
    assert P.main(["--out", str(tmp_path)]) == 0
    md = (tmp_path / "published.md").read_text()
    assert md == P.published_markdown(P.compare_published())
    assert (tmp_path / "published.csv").exists()
    assert P.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert (tmp_path / "published.md").read_text() == md
    assert P.main(["--out", str(tmp_path), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_framework_keys(rows):
    by_id = {r.id: r for r in rows}
    # original rows: the framework text names the stack (torchtune recipes; PEFT README's accelerate
    # scripts; the transformers docs' Trainer runs); added rows state it
    assert by_id[131].framework == "torchtune"
    assert by_id[96].framework == "plain"
    assert by_id[214].framework == "hf-trainer"
    assert {r.framework for r in rows if 1000 < r.id < 2000 or 2300 < r.id < 2400} == {"litgpt"}
    assert {r.framework for r in rows if 2000 < r.id < 2300} == {"hf-trainer"}  # fms-hf-tuning runs TRL's SFTTrainer
    assert by_id[131].mechanisms == ()


def test_litgpt_llama2_qlora_row_1019_field_by_field(raw):
    """config_hub/finetune/llama-2-7b/qlora.yaml at 00af8b0d: precision bf16-true, quantize bnb.nf4
    (no -dq: no double quantization), lora_r 32, lora_alpha 16, lora_dropout 0.05, lora_query and
    lora_value true, the rest false, micro_batch_size 2, global_batch_size 8 on 1 device (accum 4),
    max_seq_length 512; README table: 13.68 GB on 1xA10G; finetune/lora.py divides by 1e9."""
    row = raw[1019]
    assert (row["memory_value"], row["memory_unit"]) == ("13.68", "GB(1e9)")
    assert published_bytes(row) == 13_680_000_000
    spec = map_row(row).spec
    assert spec.model.name == "Llama-2-7B" and spec.method == "qlora"
    assert (spec.rank, spec.alpha, spec.targets) == (32, 16, "q_proj,v_proj")
    assert (spec.batch_size, spec.seq_len, spec.grad_accum) == (2, 512, 4)
    assert spec.dtype == "bf16" and spec.adapter_dtype == "bf16"
    assert spec.double_quant is False and spec.optimizer == "paged_adamw"
    assert not spec.grad_ckpt and spec.gpus == 1
    assert row["lora_dropout"] == "0.05" and row["framework_key"] == "litgpt"
    assert metric_kind(row) == "allocated"


def test_litgpt_fused_and_all_linear_targets(raw):
    falcon = map_row(raw[1001])  # falcon-7b/lora.yaml: lora_query + lora_value on Falcon's fused projection
    assert falcon.spec.targets == "query_key_value"
    assert any("fused qkv" in c for c in falcon.caveats)
    phi3 = map_row(raw[1044])  # phi-3/lora.yaml: every lora_* flag true, planned with LitGPT's own layout
    from lora_budget.core.litgpt import PARTS, parts

    assert phi3.spec.framework == "litgpt" and parts(phi3.spec) == frozenset(PARTS)  # lora_head included
    assert not any("output projection" in c for c in phi3.caveats)


def test_litgpt_full_rows_below_the_state_floor_are_low(raw):
    # Llama-3.2-1B: 1,235,814,400 parameters (catalog) x 8 bytes = 9.89e9 > the published 8.70e9
    assert raw[1027]["reliability"] == "low" and "cannot be the allocated peak" in raw[1027]["notes"]
    assert 1_235_814_400 * 8 > published_bytes(raw[1027])


def test_framework_summary_lines(rows):
    every, clean = P.framework_summary(rows)
    litgpt_qlora = next(s for s in every if (s.group, s.method) == ("litgpt", "qlora"))
    chosen = [r for r in rows if r.framework == "litgpt" and r.method == "qlora" and P.allocated_measured(r)]
    assert litgpt_qlora.n == len(chosen) > 0
    share = sum(abs(r.error_pct) <= 10 for r in chosen) / len(chosen)
    assert litgpt_qlora.within_10 == share
    n_every = {(s.group, s.method): s.n for s in every}
    assert all(s.n <= n_every[(s.group, s.method)] for s in clean)  # the clean rows are a subset


def test_render_does_not_import_the_comparison():
    import subprocess
    import sys

    code = (
        "import sys; import lora_budget.validation.published_render; "
        "print('lora_budget.validation.published' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_fms_rows_bytes_are_the_csv_bytes(raw):
    """fms-acceleration's refs/a100_80gb.csv at 24bdadb prints bytes: Mistral-7B LoRA, 1 GPU, bs 4:
    mem_peak_torch_mem_alloc_in_bytes 26704571904, stored as 26.704571904 GB(1e9)."""
    row = raw[2013]
    assert (row["memory_value"], row["memory_unit"]) == ("26.704571904", "GB(1e9)")
    assert published_bytes(row) == 26_704_571_904
    assert metric_kind(row) == "allocated"


def test_fms_lora_row_field_by_field(raw):
    """scenarios.yaml standard-peft at 24bdadb: r 16, alpha 16, dropout 0.1, q/k/v/o_proj, torch_dtype
    bfloat16 and neither bf16 nor fp16 (accelerate mixed_precision 'no'): no autocast; defaults.yaml:
    gradient checkpointing, flash-attn; benchmark.py: packed 4096-token sequences; 2 GPUs: FSDP."""
    one, two = map_row(raw[2013]).spec, map_row(raw[2014]).spec
    assert one.framework == "hf-trainer" and one.autocast is False and not one.autocast_on
    assert (one.rank, one.alpha, one.targets) == (16, 16, "q_proj,k_proj,v_proj,o_proj")
    assert (one.batch_size, one.seq_len, one.grad_accum) == (4, 4096, 1)
    assert one.grad_ckpt and one.attn == "flash" and one.lora_dropout == 0.1
    assert one.dtype == "bf16" and one.adapter_dtype == "fp32"  # peft 0.13.2 autocast_adapter_dtype
    assert (two.gpus, two.strategy, two.offload, two.batch_size) == (2, "fsdp", "none", 2)


def test_fms_qlora_rows_read_kbit_prep_and_the_bitsandbytes_release(raw):
    """baseline-peft-bnb on 1 GPU: TRL 0.13 calls prepare_model_for_kbit_training (sft_trainer.py 191-201),
    then peft_module_casting_to_bf16 puts embed_tokens and lm_head back in bf16: 2 x 32000 x 4096
    weights x 2 bytes saved = 0.488 GiB the plan's fp32 copies have in excess. The July 2024 run
    (c3a069c) pinned bitsandbytes 0.43.1, whose MatMul4Bit keeps its input, and ran fp16."""
    new = map_row(raw[2025])
    assert new.spec.kbit_prep is True and new.spec.bitsandbytes == "0.43.3" and new.spec.autocast_on
    assert any("peft_module_casting_to_bf16" in c and "0.49 GiB" in c for c in new.caveats)
    assert 2 * 32000 * 4096 * 2 / 2**30 == 0.48828125
    old = map_row(raw[2111]).spec
    assert (old.bitsandbytes, old.dtype, old.kbit_prep, old.adapter_dtype) == ("0.43.1", "fp16", True, "fp32")
    assert old.bnb_keeps_input and not new.spec.bnb_keeps_input
    assert map_row(raw[2105]).spec.adapter_dtype == "fp16"  # peft 0.11.1: a floating base weight's dtype
    sharded = map_row(raw[2026]).spec  # FSDP QLoRA: TRL skips kbit prep, adapters bf16
    assert not sharded.kbit_prep and sharded.adapter_dtype == "bf16"
    # July 2024 FSDP QLoRA (fp16 quant storage): peft gives the adapters the storage's float dtype
    assert map_row(raw[2112]).spec.adapter_dtype == "fp16"
    # b6c1455 (29 July 2024): bitsandbytes 0.43.2 no longer keeps the input; peft 0.12.0 upcasts adapters
    later = map_row(raw[2131]).spec
    assert (later.bitsandbytes, later.bnb_keeps_input, later.dtype) == ("0.43.2", False, "fp16")
    assert map_row(raw[2125]).spec.adapter_dtype == "fp32"


def test_fms_mixtral_qlora_experts_planned_quantized(raw):
    """transformers 4.48 quantizes Mixtral's per-expert nn.Linear: the row's release (lib_versions) goes
    into the spec, which plans the experts in NF4, so the caveat the transformers 5 layout needed (its
    3-D experts 16-bit, fp32 after kbit prep: 32 x 8 x 3 x 4096 x 14336 = 45,097,156,608 weights x
    (4 - 4.127/8) bytes = 146.33 GiB more than the run) is gone; the run's default optimizer is the
    Trainer's adamw_torch (foreach) for transformers 4.48.1 on torch 2.4.1."""
    mapped = map_row(raw[2029])
    spec = mapped.spec
    assert (spec.transformers, spec.torch, spec.optimizer) == ("4.48.1", "2.4.1", "adamw_foreach")
    assert spec.experts_quantized and spec.kbit_prep and spec.targets == "q_proj,k_proj,v_proj,o_proj"
    assert not any("expert weights" in c for c in mapped.caveats)
    assert not any("shift_logits" in c for c in mapped.caveats)  # the 4.48 loss is planned too


def test_fms_oom_rows_have_no_figure(raw):
    row = raw[2005]  # Mixtral full fine-tuning on 1 GPU: no train metrics, nvidia-smi 81166 MiB
    assert row["outcome"] == "OOM" and published_bytes(row) is None and "81166" in row["notes"]


def test_litgpt_resource_table_rows(raw):
    """lit-gpt resource-tables.md at 0cc02afa, lit-gpt 8641822 finetune/lora.py: r 8, alpha 16, q and v,
    dropout 0.05, batch 128 (accumulation 128 / micro), the longest Alpaca sample (1304 Llama 2
    tokens) forced into the first batch, PagedAdamW when quantized, bitsandbytes 0.41.1."""
    qlora = map_row(raw[2302]).spec  # Llama 2 7B bnb.nf4, micro-batch 1: 14.14 GB
    assert published_bytes(raw[2302]) == 14_140_000_000
    assert (qlora.method, qlora.framework, qlora.double_quant, qlora.optimizer) == (
        "qlora",
        "litgpt",
        False,
        "paged_adamw",
    )
    assert (qlora.batch_size, qlora.seq_len, qlora.grad_accum, qlora.bitsandbytes) == (1, 1304, 128, "0.41.1")
    assert map_row(raw[2303]).spec.double_quant  # bnb.nf4-dq
    fsdp = map_row(raw[2311])  # 2 GPUs: FSDP with activation checkpointing, not LitGPT's walked path
    assert (fsdp.spec.framework, fsdp.spec.gpus, fsdp.spec.offload, fsdp.spec.grad_ckpt) == ("plain", 2, "none", True)
    assert fsdp.material and any("outside the training step" in c for c in fsdp.caveats)


def test_transformers_target_names_map():
    from lora_budget.validation.published_map import lora_targets

    assert lora_targets("q_proj,k_proj,v_proj,o_proj") == (("q_proj", "k_proj", "v_proj", "o_proj"), False)
    assert lora_targets("gate_proj, up_proj, down_proj") == (("gate_proj", "up_proj", "down_proj"), False)
