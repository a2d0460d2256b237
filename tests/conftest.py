import pytest

from lora_budget.catalog.models import resolve_model


@pytest.fixture(scope="session")
def llama7b():
    return resolve_model("Llama-2-7B")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path_factory):
    """No test reaches the Hugging Face Hub or reads the user's own HF cache: offline, with an empty cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache-empty"))


@pytest.fixture(scope="module")
def coefficient_cache(tmp_path_factory):
    """A fresh derived-coefficients cache folder for one test module (``core.derived.ENV_DIR``): every
    derivation the module runs writes there, never to the user's cache."""
    from lora_budget.core import derived

    folder = tmp_path_factory.mktemp("coefficients")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(derived.ENV_DIR, str(folder))
        yield folder
