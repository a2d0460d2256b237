"""The ``serve`` page in a real headless Chromium: the numbers it shows are ``plan --json``'s.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/run) and ``selenium`` (the
``test`` extra); skipped, saying which is missing, where they are not installed. chromedriver is
taken from PATH and given to selenium explicitly, so Selenium Manager never goes to the network.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.cli.serve_cmd import make_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "no headless browser: apt-get install chromium chromium-driver (as .ci/run does)", allow_module_level=True
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

GIB = 2**30


@pytest.fixture(scope="module")
def page() -> Iterator[tuple[object, str]]:
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


def plan_json(*flags: str) -> dict:
    r = CliRunner().invoke(main, ["plan", *flags, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def settle(driver, query: str) -> float:
    """Wait until the page shows the answer for exactly this query; the browser-measured ms of that answer."""
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 10).until(lambda d: body.get_attribute("data-query") == query)
    return float(body.get_attribute("data-ms"))


def shown(driver, expected: dict) -> None:
    """Every method's cells equal plan --json's numbers, formatted as the page formats them."""
    text = lambda cell: driver.find_element(By.ID, cell).text  # noqa: E731
    assert [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#table tr:first-child th")][1:] == [
        {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}[m["method"]] for m in expected["methods"]
    ]
    for m in expected["methods"]:
        name = m["method"]
        assert text(f"peak-{name}") == f"{m['peak_bytes'] / GIB:.2f}"
        assert text(f"headroom-{name}") == f"{m['headroom_bytes'] / GIB:.2f}"
        assert text(f"verdict-{name}") == ("FITS" if m["fits"] else "NO FIT")
        assert text(f"maxbatch-{name}") == (str(m["max_batch_size"]) if m["max_batch_size"] else "none")
        assert text(f"maxseq-{name}") == (str(m["max_seq_len"]) if m["max_seq_len"] else "none")
        # one stacked bar segment per non-zero category, each titled with its GiB
        bars = driver.find_elements(By.CSS_SELECTOR, "#chart rect title")
        titles = {b.get_attribute("textContent") for b in bars}
        label = {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}[name]
        assert f"{label} weights: {m['weights_bytes'] / GIB:.2f} GiB" in titles


def test_page_numbers_equal_plan_json(page) -> None:
    driver, url = page
    driver.get(url)
    first = settle(driver, "")
    shown(driver, plan_json())

    model = driver.find_element(By.ID, "model")
    model.clear()
    model.send_keys("8b")
    driver.find_element(By.CSS_SELECTOR, "[name=m][value=full]").click()
    seq = driver.find_element(By.ID, "seq-len")
    seq.clear()
    seq.send_keys("4096")
    driver.find_element(By.ID, "gpu").clear()
    driver.find_element(By.ID, "gpu").send_keys("rtx4090")
    change = settle(driver, "model=8b&gpu=rtx4090&seq-len=4096&method=lora%2Cqlora")
    shown(driver, plan_json("-m", "8b", "--method", "lora,qlora", "-s", "4096", "-g", "rtx4090"))
    assert "model=8b" in driver.current_url and "seq-len=4096" in driver.current_url
    assert driver.find_element(By.ID, "cli").text == (
        "lora-budget plan --model 8b --gpu rtx4090 --seq-len 4096 --method lora,qlora"
    )

    # the permalink restores the same page
    driver.get(driver.current_url)
    settle(driver, "model=8b&gpu=rtx4090&seq-len=4096&method=lora%2Cqlora")
    shown(driver, plan_json("-m", "8b", "--method", "lora,qlora", "-s", "4096", "-g", "rtx4090"))
    # fetch to painted, measured in the page: generous bound, the figures are printed for the record
    print(f"browser: first answer {first:.1f} ms, after the change {change:.1f} ms")
    assert change < 250


def test_bad_input_shows_the_cli_error(page) -> None:
    driver, url = page
    driver.get(url + "?seq-len=0")
    settle(driver, "seq-len=0")
    r = CliRunner().invoke(main, ["plan", "-s", "0"])
    assert r.exit_code == 2
    assert driver.find_element(By.ID, "error").text == r.output.strip().splitlines()[-1].removeprefix("Error: ")
