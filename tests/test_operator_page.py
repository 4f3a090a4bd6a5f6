"""The operator's page in a real browser (Debian's chromium + chromedriver, Selenium)
against a real daemon on loopback with real images (issue 13).

Screenshots go to the test's temp dir; set EDGE_RUNTIME_SCREENS=DIR to copy them there too.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from edge_runtime.daemon_process import Daemon

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("page") / "data")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), \
        "apt-get install -y chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,720", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 720)
    yield driver
    driver.quit()


class Shots:
    def __init__(self, driver, directory: Path) -> None:
        self.driver, self.directory = driver, directory
        self.copy_to = os.environ.get("EDGE_RUNTIME_SCREENS")

    def __call__(self, name: str) -> Path:
        path = self.directory / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        if self.copy_to:
            Path(self.copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.copy_to) / path.name)
        return path


def _go(driver, daemon, view: str) -> None:
    driver.get(f"{daemon.url}/#{view}")
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, f"view-{view}").is_displayed())


def _viewport(driver, width: int, height: int) -> None:
    """The inner viewport exactly (the window adds its frame in headless mode too)."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def test_operator_flow_in_a_browser(daemon, browser, data_root, tmp_path):
    shot = Shots(browser, tmp_path)
    wait = WebDriverWait(browser, 15, poll_frequency=0.05)
    _viewport(browser, 1280, 720)
    # no part yet: no overlay (not an empty image box with its alt text)
    _go(browser, daemon, "line")
    assert not browser.find_element(By.ID, "latest-map").is_displayed()

    # products: create one and upload captures through the file input
    _go(browser, daemon, "products")
    browser.find_element(By.ID, "create-name").send_keys("bottle")
    browser.find_element(By.CSS_SELECTOR, "#create-form button").click()
    wait.until(lambda d: d.find_element(By.ID, "product-detail").is_displayed())
    good = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:8]
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in good))
    wait.until(ec.text_to_be_present_in_element((By.ID, "capture-count"), "8"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 8)
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth > 0)"))
    names = [e.get_attribute("title") for e in
             browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
    assert names == [p.name for p in good]  # captures keep their file names
    assert "replay store" in browser.find_element(By.ID, "delete-consequences").text
    shot("products_1280x720")

    # teach: start training, watch the bar move to done
    _go(browser, daemon, "teach")
    Select(browser.find_element(By.ID, "teach-product")).select_by_visible_text("bottle")
    epochs = browser.find_element(By.ID, "teach-epochs")
    epochs.clear()
    epochs.send_keys("2")
    browser.find_element(By.ID, "train").click()
    bar = browser.find_element(By.ID, "progress-bar")
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while browser.find_element(By.ID, "job-state").get_attribute("data-status") != "succeeded":
        assert time.monotonic() < deadline, browser.find_element(By.ID, "job-state").text
        assert browser.find_element(By.ID, "job-state").get_attribute("data-status") \
            not in ("failed", "cancelled"), browser.find_element(By.ID, "job-state").text
        value = int(bar.get_attribute("aria-valuenow") or 0)
        if not seen or value != seen[-1]:
            seen.append(value)
            if 25 < value < 85 and not (tmp_path / "teach_training.png").exists():
                shot("teach_training")
        time.sleep(0.1)
    assert int(bar.get_attribute("aria-valuenow")) == 100
    assert any(0 < v < 100 for v in seen), seen  # it moved, not 0 -> 100
    assert seen == sorted(seen), seen  # and never went backwards
    wait.until(ec.text_to_be_present_in_element((By.ID, "job-result"), "is live"))
    shot("teach_done")

    # a few parts on the line so the threshold view has scores
    for path in sorted((data_root / "bottle" / "test" / "good").glob("*.png"))[:4]:
        assert daemon.inspect("bottle", path).status_code == 200
    defect = data_root / "bottle" / "test" / "broken_large" / "000.png"
    assert daemon.inspect("bottle", defect).status_code == 200

    # threshold: drag the line to the left, the preview says more parts would be rejected
    _go(browser, daemon, "threshold")
    wait.until(ec.text_to_be_present_in_element((By.ID, "thr-preview"), "of the last 5"))
    preview = browser.find_element(By.ID, "thr-preview")
    before_text, before = preview.text, int(preview.get_attribute("data-rejects"))
    canvas = browser.find_element(By.ID, "hist")
    # drag the line from the threshold in use to just under the lowest recent score
    start, target = browser.execute_script(
        "const t = state.thr; return [t.current / t.max, 0.9 * Math.min(...t.scores) / t.max]")
    width = canvas.size["width"]
    ActionChains(browser).move_to_element_with_offset(canvas, int((start - 0.5) * width), 0) \
        .click_and_hold().move_by_offset(int((target - start) * width), 0).release().perform()
    wait.until(lambda d: d.find_element(By.ID, "thr-preview").text != before_text)
    after = int(preview.get_attribute("data-rejects"))
    assert after > before and after == 5, preview.text
    shot("threshold_dragged")
    browser.find_element(By.ID, "thr-apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "thr-current"), "operator"))

    # line: a defective part appears with its overlay within a second
    _go(browser, daemon, "line")
    wait.until(lambda d: d.find_element(By.ID, "link-state").text == "live")
    sent = time.monotonic()
    result = daemon.inspect("bottle", defect).json()
    WebDriverWait(browser, 1.0, poll_frequency=0.02).until(lambda d: d.execute_script(
        "const i = document.getElementById('latest-map');"
        "return i.dataset.inspection === arguments[0] && i.complete && i.naturalWidth > 0",
        str(result["id"])))
    shown_after = time.monotonic() - sent
    assert shown_after < 1.0
    assert result["verdict"] == "reject"
    assert browser.find_element(By.ID, "latest-verdict").text.endswith("REJECT")
    feed = browser.find_element(By.CSS_SELECTOR, f"#feed li[data-inspection='{result['id']}']")
    assert "reject" in feed.text
    shot("line_1280x720")

    # review: "this part is fine" adds it to the captures
    _go(browser, daemon, "review")
    card = wait.until(lambda d: d.find_element(
        By.CSS_SELECTOR, f"#review-list figure[data-inspection='{result['id']}']"))
    shot("review")
    card.find_element(By.CSS_SELECTOR, "button[data-label='fine']").click()
    wait.until(lambda d: "9 now" in card.text)
    _go(browser, daemon, "products")
    # the table re-renders on every product event: read it in the page, not by element handle
    wait.until(lambda d: d.execute_script(
        "const c = document.querySelector('#products td.count'); return c && c.textContent")
        == "9")

    # models: an earlier version on disk, rolled back to from the page
    models = daemon.data_dir / "models"
    live = daemon.client.get("/status").json()["model_version"]
    shutil.copytree(models / live, models / "v000000")
    _go(browser, daemon, "models")
    button = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                 "button[data-promote='v000000']"))
    button.click()
    browser.switch_to.alert.accept()
    wait.until(lambda d: "live" in (d.execute_script(
        "const r = document.querySelector(\"tr[data-version='v000000']\");"
        "return r ? r.textContent : ''") or ""))
    assert daemon.client.get("/status").json()["model_version"] == "v000000"
    shot("models_rolled_back")
    _go(browser, daemon, "system")
    wait.until(ec.text_to_be_present_in_element((By.ID, "system"), "v000000"))
    shot("system")

    # a phone on the plant network
    _viewport(browser, 390, 844)
    _go(browser, daemon, "line")
    WebDriverWait(browser, 5).until(lambda d: d.execute_script(
        "return document.getElementById('latest-map').naturalWidth > 0"))
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    shot("line_phone")
    _go(browser, daemon, "products")
    shot("products_phone")
    _viewport(browser, 1280, 720)
