import pytest

from lora_budget.catalog.models import resolve_model


@pytest.fixture(scope="session")
def llama7b():
    return resolve_model("Llama-2-7B")
