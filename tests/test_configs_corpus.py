"""The config corpus (tests/data/configs/corpus/, sources in MANIFEST.tsv): every file planned or refused in
one line, no key silently dropped, and 40 hand-verified files read exactly as their tools run them.

The table the whole-corpus test prints is ``python tests/configs_corpus.py``'s.
"""

from collections import Counter

import pytest
from configs_corpus import CORPUS, ROWS, SETTINGS, VERIFIED, check_verified, run_all, table, tool_of

from lora_budget.configs import load_config
from lora_budget.configs.keys import NO_EFFECT, NOT_MODELLED, classify


def test_corpus_has_300_configs_from_5_tools():
    assert len(ROWS) >= 300
    assert len({row[1] for row in ROWS}) >= 5  # repositories: axolotl, LLaMA-Factory, TRL, handbook, open-r1, PEFT
    assert all(len(row) == 5 and len(row[3]) == 40 for row in ROWS)  # repository, ref and commit of each file


@pytest.mark.parametrize("path", sorted(VERIFIED), ids=lambda p: p.split("/", 1)[1][-60:])
def test_hand_verified_config_reads_as_its_tool_runs_it(path):
    expect = VERIFIED[path]["expect"]
    assert all(isinstance(why, str) and len(why) >= 5 for _, why in expect.values())  # each value justified
    assert set(expect) <= set(SETTINGS)
    assert check_verified(path, load_config(CORPUS / path).values) == ()


def test_hand_verified_set_spans_the_tools():
    assert len(VERIFIED) >= 40
    tools = Counter(tool_of(p) for p in VERIFIED)
    assert len(tools) >= 8 and min(tools.values()) >= 1, tools
    for path, entry in VERIFIED.items():
        pinned = set(entry["expect"])
        if path.startswith("peft/"):  # an adapter_config.json carries the adapter only
            assert {"method", "rank", "alpha", "targets", "lora_dropout"} <= pinned
        elif tool_of(path) in ("accelerate", "deepspeed"):  # a launcher file carries the sharding only
            assert {"strategy", "offload"} <= pinned
        else:
            assert {"method", "dtype", "batch_size", "seq_len", "grad_ckpt", "strategy", "loss", "framework"} <= pinned


def test_a_not_modelled_key_that_is_off_has_no_effect():
    assert classify("torch_compile", True)[0] == "not-modelled"
    assert classify("torch_compile", False) == ("no-effect", "off")
    assert classify("unfrozen_parameters", None) == ("no-effect", "off")
    assert classify("wandb_project", "x")[0] == "no-effect"
    assert classify("a_key_no_tool_has", 1) == ("unknown", "")
    assert not set(NO_EFFECT) & set(NOT_MODELLED)


def test_every_corpus_config_plans_or_is_refused_in_one_line(capsys):
    outcomes = run_all()
    assert not [(o.path, o.why) for o in outcomes if o.kind == "traceback"]
    for o in outcomes:
        if o.kind == "refused":
            assert o.why.startswith("Error: ") and "\n" not in o.why, (o.path, o.why)
    # no silent misread: every key of every file read is read, or named no effect / not modelled with why
    assert not [(o.path, o.unknown) for o in outcomes if o.unknown]
    assert not [(o.path, o.wrong) for o in outcomes if o.wrong]
    assert sum(1 for o in outcomes if o.verified) == len(VERIFIED)  # every hand-verified file plans
    # planned once the models resolve, out of the files that train a modelled method of a causal LM
    out_of_scope = ("adapter type not modelled", "not a training config", "model not a causal LM")
    in_scope = [o for o in outcomes if o.reason not in out_of_scope]
    planned = sum(1 for o in in_scope if o.kind == "planned")
    assert planned >= 0.9 * len(in_scope), (planned, len(in_scope))
    with capsys.disabled():
        print("\n" + table(outcomes))


def test_keys_of_a_read_file_are_all_accounted_for():
    """The reader's three lists and its read keys partition the file's keys."""
    path = CORPUS / "axolotl/examples/llama-3/qlora.yml"
    loaded = load_config(path)
    named = {k.split(" (")[0] for k in loaded.unmodelled} | set(loaded.ignored) | set(loaded.unknown)
    assert "attn_implementation" not in named  # read: --attn flash
    assert loaded.values["attn"] == "flash"
    assert {"wandb_project", "learning_rate", "datasets", "sample_packing"} <= set(loaded.ignored)
