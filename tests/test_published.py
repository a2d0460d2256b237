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
    with open(P.DATA, newline="", encoding="utf-8") as f:
        return {int(r["id"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def rows() -> list[P.PublishedRow]:
    return P.compare_published()


def test_csv_has_54_rows_and_the_documented_columns(raw):
    assert len(raw) == 54
    with open(P.DATA, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert tuple(header) == tuple(P.COLUMNS)
    documented = set(re.findall(r"`([a-z_]+)`", DATA_README.read_text()))
    assert [c for c in header if c not in documented] == []
    assert len(P.load_rows()) == 54


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
    assert len(rows) == 54
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
    assert any("not in the catalog" in x for x in by_id[103].reasons)  # BLOOM


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
    # 150 and 151 differ only in torch.compile (row data); 150 is clean, 151 is not
    assert by_id[150].in_summary
    assert not by_id[151].in_summary and any("compile" in c for c in by_id[151].caveats)
    assert not by_id[149].in_summary  # reliability low
    assert not by_id[159].in_summary and by_id[159].gap_bytes is not None  # reserved: a gap, not an error
    assert by_id[159].error_pct is None


def test_paged_state_is_left_out_of_the_plan_compared(rows):
    from lora_budget.core.peak import peak_model

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
