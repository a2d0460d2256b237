"""Model resolution order: path, local Hugging Face cache, catalog, Hub (mocked); offline and gated messages.

No test here touches the network: the cache is a tmp_path laid out as huggingface_hub lays it out, and
``hf_hub_download`` is replaced by a fake that writes a config.json where the real one would.
"""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lora_budget.catalog import hub
from lora_budget.catalog.models import catalog, resolve_model, size_token
from lora_budget.cli import main
from lora_budget.errors import LoraBudgetError, UnknownNameError

QWEN_05B = dict(next(e for e in catalog() if e["name"] == "Qwen2.5-0.5B")["config"])
GEMMA3_1B = dict(next(e for e in catalog() if e["name"] == "Gemma-3-1B")["config"])


def _snapshot(cache, repo_id, revision, config):
    snap = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / revision
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "b"))
    assert hub.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub.cache_dir() == tmp_path / "b" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"


def test_cached_repo_resolves_and_prefers_refs_main(cache):
    # two snapshots: refs/main names the Qwen one, the other (a 2-layer variant) is written later
    _snapshot(cache, "acme/tiny", "aaa", QWEN_05B)
    _snapshot(cache, "acme/tiny", "bbb", {**QWEN_05B, "num_hidden_layers": 2})
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("aaa\n")
    ref = resolve_model("acme/tiny")
    assert ref.shape.layers == QWEN_05B["num_hidden_layers"] == 24
    assert ref.hf_id == "acme/tiny" and ref.source.endswith("aaa/config.json")


def test_cache_wins_over_catalog_for_the_same_id(cache):
    # the user's own cached copy of a catalog repo is what they will train, so it comes first
    _snapshot(cache, "Qwen/Qwen2.5-0.5B", "ccc", {**QWEN_05B, "num_hidden_layers": 3})
    assert resolve_model("Qwen/Qwen2.5-0.5B").shape.layers == 3


def test_offline_unknown_repo_says_what_was_tried(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownNameError) as exc:
        resolve_model("acme/not-here-7b")
    msg = str(exc.value)
    assert "\n" not in msg and "catalog" in msg and str(cache) in msg and "offline" in msg
    assert "config.json path" in msg


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: records calls, writes config.json into the cache."""

    def __init__(self, config=None, error=None):
        self.calls = []
        self.config, self.error = config, error

    def __call__(self, repo_id, filename, cache_dir=None, **kw):
        self.calls.append((repo_id, filename))
        if self.error is not None:
            raise self.error
        from pathlib import Path

        snap = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "fff"
        snap.mkdir(parents=True)
        (snap / filename).write_text(json.dumps(self.config))
        return str(snap / filename)


@pytest.fixture
def online(monkeypatch, cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: True)


def test_hub_fetches_config_json_only_then_cache_answers(online, monkeypatch):
    import huggingface_hub

    fake = FakeHub(config=GEMMA3_1B)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    ref = resolve_model("acme/gemma-ft")
    assert fake.calls == [("acme/gemma-ft", "config.json")]
    assert ref.shape.model_type == "gemma3_text" and ref.shape.layers == 26 and ref.hf_id == "acme/gemma-ft"
    # second time: from the cache the download wrote, no Hub call even offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("acme/gemma-ft").shape.layers == 26 and len(fake.calls) == 1


def _http_error(cls, status):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/x"))
    return cls("refused", response=response)


def test_gated_repo_message(online, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(error=_http_error(errors.GatedRepoError, 403)))
    with pytest.raises(LoraBudgetError, match=r"gated or private.*huggingface-cli login.*HF_TOKEN"):
        resolve_model("meta-llama/Some-Gated-Model")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(error=_http_error(errors.HfHubHTTPError, 401)))
    with pytest.raises(LoraBudgetError, match=r"gated or private.*HF_TOKEN"):
        resolve_model("meta-llama/Some-Gated-Model")


def test_hub_without_network_or_package(online, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(error=errors.LocalEntryNotFoundError("x")))
    with pytest.raises(UnknownNameError, match="could not be reached"):
        resolve_model("acme/x")
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(UnknownNameError, match="could not be reached"):
        resolve_model("acme/x")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(LoraBudgetError, match=r"pip install 'lora-budget\[hub\]'"):
        resolve_model("acme/x")


def test_unsupported_architecture_says_so(cache):
    """An architecture outside the analytical walk resolves to a trace-derived shape (core/derived.py);
    an incomplete config of one fails in one line naming what is missing."""
    _snapshot(cache, "microsoft/phi-2", "ddd", {"model_type": "phi", "hidden_size": 2560})
    with pytest.raises(LoraBudgetError, match=r"config of 'phi' has no layer count"):
        resolve_model("microsoft/phi-2")
    _snapshot(
        cache,
        "acme/phi",
        "ddd",
        {
            "model_type": "phi",
            "hidden_size": 2560,
            "num_hidden_layers": 2,
            "num_attention_heads": 32,
            "vocab_size": 51200,
        },
    )
    assert resolve_model("acme/phi").shape.derived


def test_multimodal_text_tower_planned_with_warning(cache):
    # Gemma 3 4B's checkpoint layout: the decoder's config nested under text_config
    _snapshot(cache, "acme/gemma-3-vl", "eee", {"model_type": "gemma3", "text_config": GEMMA3_1B})
    ref = resolve_model("acme/gemma-3-vl")
    assert ref.shape.layers == 26
    assert any("vision tower and image tokens are not counted" in n for n in ref.shape.notes)
    r = CliRunner().invoke(main, ["plan", "-m", "acme/gemma-3-vl", "-g", "h100", "--method", "lora", "--json"])
    assert r.exit_code == 0, r.output
    warnings = json.loads(r.output)["methods"][0]["warnings"]
    assert any("vision tower" in w for w in warnings)


def test_plan_offline_flag(monkeypatch, cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "download_config", lambda repo: pytest.fail("--offline asked the Hub"))
    r = CliRunner().invoke(main, ["plan", "-m", "acme/nowhere-7b", "--offline"])
    assert r.exit_code == 2 and "offline" in r.output and "Traceback" not in r.output


def test_plan_does_not_import_huggingface_hub():
    code = (
        "import sys; from lora_budget.cli import main\n"
        "try: main(['plan', '-m', '7b', '-g', 'h100', '--json'])\n"
        "except SystemExit: pass\n"
        "print('huggingface_hub' in sys.modules, 'torch' in sys.modules, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize(
    ("text", "size"),
    [("google/gemma-3-270m", "270m"), ("Mixtral-8x7B", "8x7b"), ("Qwen2.5-0.5B", "0.5b"), ("gpt2", None)],
)
def test_size_token(text, size):
    assert size_token(text) == size


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("gemma-3-270m-qat", "27B"),
        ("Yi-1.5-34b", "405B"),
        ("CodeLlama-70b-chat", "7B"),
        ("CodeLlama-34b-chat", "405B"),
        ("SmolLM2-1.7B-Instruct", "135M"),
        ("Qwen3-0.6B-chat", "235B"),
    ],
)
def test_near_miss_hint_respects_size(text, wrong):
    with pytest.raises(UnknownNameError) as exc:
        resolve_model(text)
    assert wrong not in str(exc.value)


def test_near_miss_hint_prefers_same_size():
    with pytest.raises(UnknownNameError, match=r"closest: Qwen2\.5-7B"):
        resolve_model("Qwen2.5-7B-Chat")


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("CodeLlama-34b-chat", "CodeLlama-34B"),
        ("mixtral-8x22b-chat", "Mixtral-8x22B-v0.1"),
        ("qwen3-4b-chat", "Qwen3-4B"),
    ],
)
def test_near_miss_hint_names_each_entry_once(text, first):
    # aliases stand for their entry: the hint names entries, each once, the same size first
    with pytest.raises(UnknownNameError) as exc:
        resolve_model(text)
    hint = str(exc.value).split("closest: ")[1].split(" (see")[0].split(", ")
    entries = [resolve_model(h).name for h in hint]
    assert entries[0] == first and len(entries) == len(set(entries))
