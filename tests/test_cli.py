import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lora_budget.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_plan_default_output():
    r = run("plan", "--model", "7b", "--gpu", "24GB")
    assert r.exit_code == 0
    out = r.output
    assert "Llama-2-7B" in out and "FITS" in out and "DOES NOT FIT" in out
    assert "GiB" in out and "to fit:" in out and "--grad-ckpt" in out
    assert "24,000,000,000 bytes" in out


def test_plan_json():
    r = run("plan", "-m", "8b", "-g", "h100", "--json")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert [m["method"] for m in data["methods"]] == ["full", "lora", "qlora"]
    assert data["gpu"]["name"] == "H100 SXM"


def test_plan_csv_and_markdown():
    r = run("plan", "--csv")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert [row["method"] for row in rows] == ["full", "lora", "qlora"]
    r = run("plan", "--markdown", "--method", "qlora")
    assert r.exit_code == 0 and "| peak |" in r.output.replace("**peak**", "peak")


def test_multi_gpu_csv_and_markdown_carry_the_sharding_and_comm():
    """The rendered rows repeat what the API returned for the same spec; comm is empty on one GPU."""
    from lora_budget.api import plan

    args = ("-m", "7b", "-g", "h100-sxm", "--method", "full", "--gpus", "8", "--strategy", "zero2")
    (row,) = csv.DictReader(io.StringIO(run("plan", *args, "--csv").output))
    (m,) = plan("7b", "h100-sxm", ("full",), gpus=8, strategy="zero2").methods
    assert (row["gpus"], row["strategy"], row["offload"]) == ("8", "zero2", "none")
    assert int(row["comm_bytes"]) == m.time.comm_bytes > 0
    assert float(row["comm_exposed_s"]) == m.time.comm_exposed_s
    md = run("plan", *args, "--markdown").output
    assert f"| comm (GB/step) | {m.time.comm_bytes / 1e9:,.2f} |" in md
    (single,) = csv.DictReader(
        io.StringIO(run("plan", "-m", "7b", "-g", "h100-sxm", "--method", "lora", "--csv").output)
    )
    assert (single["gpus"], single["comm_bytes"], single["comm_s"]) == ("1", "", "")
    assert "comm" not in run("plan", "-m", "7b", "-g", "h100-sxm", "--method", "lora", "--markdown").output


def test_models_and_gpus():
    r = run("models")
    assert r.exit_code == 0 and "6,738,415,616" in r.output
    r = run("gpus")
    assert r.exit_code == 0 and "H200" in r.output and "MI300X" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "lama-7b"], "closest"),
        (["--gpu", "24XB"], "memory size"),
        (["--gpu", "rtx 9999"], "unknown GPU"),
        (["--batch-size", "0"], "must be positive"),
        (["--batch-size", "lots"], "not a positive integer"),
        (["--rank", "0"], "LoRA rank must be a positive integer"),
        (["--rank", "100000"], "larger than"),
        (["--targets", "c_fc"], "does not exist"),
        (["--seq-len", "0"], "sequence length"),
    ],
)
def test_bad_input_exit_2(args, message):
    r = CliRunner().invoke(main, ["plan", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_config_missing_field_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    r = CliRunner().invoke(main, ["plan", "--model", str(tmp_path / "config.json")])
    assert r.exit_code == 2 and "missing the field" in r.output


def test_seq_beyond_positions_warns():
    r = run("plan", "--seq-len", "8192")
    assert r.exit_code == 0 and "max_position_embeddings" in r.output


def test_plan_imports_no_heavy_modules():
    code = (
        "import sys; from lora_budget.cli import main\n"
        "from lora_budget.api import plan; plan('70b', 'h100', batch_size='auto')\n"
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'matplotlib', 'peft', 'bitsandbytes', 'numpy')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "lora_budget", "plan", "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["model"]["name"] == "Llama-2-7B"
