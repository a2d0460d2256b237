"""``lora-budget serve``'s API: /api/plan is plan --json, errors are the CLI's lines as HTTP 400."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.cli.serve_cmd import make_server


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str, body: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["plan", *args])
    return r.exit_code, r.output


def cli_error(*args: str) -> str:
    """The CLI's own error line for these flags (click prints 'Error: <message>' last)."""
    code, out = cli(*args)
    assert code == 2, out
    return out.strip().splitlines()[-1].removeprefix("Error: ")


def test_starts_and_answers_within_a_second() -> None:
    t0 = time.perf_counter()
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, _ = get(f"http://127.0.0.1:{server.server_address[1]}/api/plan?model=7b")
        elapsed = time.perf_counter() - t0
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    assert elapsed < 1.0, f"start + first answer took {elapsed:.3f} s"
    assert server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    "query, flags",
    [
        ("", []),
        (
            "model=8b&gpu=rtx4090&method=qlora&seq-len=4096&grad-ckpt=1",
            ["-m", "8b", "-g", "rtx4090", "--method", "qlora", "-s", "4096", "--grad-ckpt"],
        ),
        (
            "model=70b&gpu=h100&method=full&grad-ckpt=1&gpus=8&strategy=fsdp&tokens=100M&price=2",
            [
                "-m",
                "70b",
                "-g",
                "h100",
                "--method",
                "full",
                "--grad-ckpt",
                "--gpus",
                "8",
                "--strategy",
                "fsdp",
                "--tokens",
                "100M",
                "--price",
                "2",
            ],
        ),
        (
            "model=Qwen2.5-7B&rank=64&targets=attn&optimizer=adamw8bit&batch-size=auto",
            ["-m", "Qwen2.5-7B", "-r", "64", "--targets", "attn", "--optimizer", "adamw8bit", "-b", "auto"],
        ),
    ],
)
def test_plan_is_plan_json_byte_for_byte(base: str, query: str, flags: list[str]) -> None:
    status, body = get(f"{base}/api/plan?{query}")
    code, out = cli(*flags, "--json")
    assert status == 200 and code == 0
    assert body == out
    assert json.loads(body)["schema"] == 1


@pytest.mark.parametrize(
    "query, flags",
    [
        ("model=no-such-model", ["-m", "no-such-model"]),
        ("gpu=quantum-9000", ["-g", "quantum-9000"]),
        ("gpu=-3GB", ["-g", "-3GB"]),
        ("method=lorra", ["--method", "lorra"]),
        ("seq-len=abc", ["-s", "abc"]),
        ("seq-len=0", ["-s", "0"]),
        ("batch-size=-1", ["-b", "-1"]),
        ("batch-size=many", ["-b", "many"]),
        ("rank=0", ["-r", "0"]),
        ("targets=nothing", ["--targets", "nothing"]),
        ("optimizer=lion", ["--optimizer", "lion"]),
        ("gpus=0", ["--gpus", "0"]),
        ("strategy=zero9", ["--strategy", "zero9"]),
        ("tokens=lots", ["--tokens", "lots"]),
        ("price=-1", ["--price", "-1"]),
        ("overhead=much", ["--overhead", "much"]),
    ],
)
def test_bad_input_is_400_with_the_cli_line(base: str, query: str, flags: list[str]) -> None:
    status, body = get(f"{base}/api/plan?{query}")
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error == cli_error(*flags)
    assert "\n" not in error and "Traceback" not in error


def test_unknown_parameter_and_bad_switch_are_400(base: str) -> None:
    for query, words in (("colour=red", "unknown parameter 'colour'"), ("grad-ckpt=maybe", "grad-ckpt must be 1 or 0")):
        status, body = get(f"{base}/api/plan?{query}")
        assert status == 400
        assert words in json.loads(body)["error"]


def test_pasted_config_json(base: str, tmp_path) -> None:
    config = {
        "model_type": "llama",
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    status, body = get(f"{base}/api/plan?method=lora", json.dumps(config).encode())
    code, out = cli("-m", str(path), "--method", "lora", "--json")
    assert status == 200 and code == 0
    got, want = json.loads(body), json.loads(out)
    # the model's name and the spec name the file it was read from; every byte count must agree
    nums = [
        {k: v for k, v in m.items() if k.endswith("_bytes") or k in ("fits", "max_batch_size", "max_seq_len")}
        for m in got["methods"]
    ]
    assert nums == [{k: v for k, v in m.items() if k in nums[0]} for m in want["methods"]]
    assert got["model"]["param_count"] == want["model"]["param_count"]
    status, body = get(f"{base}/api/plan", b"{not json")
    assert status == 400 and json.loads(body)["error"].startswith("the pasted config.json is not JSON")


def test_models_page_and_404(base: str) -> None:
    status, body = get(f"{base}/api/models")
    data = json.loads(body)
    assert status == 200 and any(m["name"] == "Llama-2-7B" for m in data["models"])
    assert data["colours"]["methods"]["lora"] == "#0072B2"  # Okabe-Ito blue, as report/style.py
    status, page = get(f"{base}/")
    assert status == 200 and "<form" in page
    for asset in ("/app.js", "/style.css"):
        assert get(base + asset)[0] == 200
    status, body = get(f"{base}/etc/passwd")
    assert status == 404 and "error" in json.loads(body)


def test_internal_error_is_one_line_500(base: str, monkeypatch) -> None:
    import lora_budget.cli.serve_cmd as serve

    def boom(argv):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(serve, "run_plan", boom)
    status, body = get(f"{base}/api/plan")
    assert status == 500 and json.loads(body)["error"] == "internal error: RuntimeError: disk on fire"


def test_answers_under_100_ms(base: str) -> None:
    times = []
    for seq in (512, 1024, 2048, 4096, 8192):
        t0 = time.perf_counter()
        assert get(f"{base}/api/plan?model=8b&gpu=rtx4090&seq-len={seq}")[0] == 200
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[2] < 0.1, times


def test_port_in_use_is_one_line_exit_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert r.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.output and "Traceback" not in r.output
