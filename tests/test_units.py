import pytest

from lora_budget.units import parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * 10**9),
        ("24 GB", 24 * 10**9),
        ("80GiB", 80 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5TB", 15 * 10**11),
        ("1024b", 1024),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["24", "24XB", "GB", "-3GB", "0GB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)
