"""The `crs serve` page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium).

It loads the page, sends two turns, sees the replies and the recommendation cards and the /why
panel, checks that markup typed by the user shows as text, and saves a screenshot
(``CRS_SCREENSHOT=path`` chooses where; default: the test's tmp folder).  It serves a tiny KGSF run
trained for the tests, or ``CRS_SERVE_RUN=RUN_DIR`` (a finished KGSF demo run: the README's screenshot).

Without the browser or Selenium the test skips, except in CI (``CI=1``), where it fails:
``.ci/run`` (scripts/test.sh) installs both when they are absent.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_serve import tiny_kgsf_engine

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def _browser_or_skip() -> tuple[str, str]:
    """The browser binary and its driver; a skip (a failure under CI=1) naming what is missing."""
    browser = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    missing = [what for what, found in (("chromium", browser), ("chromium-driver", driver)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = (f"the browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver "
                   "(scripts/test.sh does it when it can)")
        if os.environ.get("CI", "") not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,860", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from crs.serving.chat import load_engine
    from crs.serving.server import BackgroundServer, create_app

    run_dir = os.environ.get("CRS_SERVE_RUN")  # e.g. the README's demo run, for its screenshot
    engine = load_engine(run_dir) if run_dir else tiny_kgsf_engine(tmp_path_factory)
    with BackgroundServer(create_app(engine)) as live:
        yield live


@pytest.mark.slow  # starting Chromium takes seconds
def test_the_page_chats_shows_cards_and_why(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    wait.until(lambda d: "demo" in d.find_element(By.ID, "status").text)  # health answered, session opened

    def send(text: str, replies: int) -> None:
        box = browser.find_element(By.ID, "input")
        box.clear()
        box.send_keys(text)
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li.bot")) == replies)
        wait.until(ec.element_to_be_clickable((By.ID, "send")))

    send("I want something scary with ghosts", 1)
    send("<b>and</b> a comedy with <script>alert(1)</script> jokes", 2)

    users = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#log li.user")]
    bots = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#log li.bot")]
    assert users == ["I want something scary with ghosts", "<b>and</b> a comedy with <script>alert(1)</script> jokes"]
    assert len(bots) == 2 and all(bots) and not browser.find_elements(By.CSS_SELECTOR, "#log li.error")
    assert not browser.find_elements(By.CSS_SELECTOR, "#log b, #log script")  # shown as text, not markup
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards li.card")
    assert len(cards) == 5
    assert all(card.find_element(By.CSS_SELECTOR, ".name").text and "score" in card.text for card in cards)
    why = browser.find_element(By.ID, "why").text
    assert "Top item: " in why and "leave-one-out" in why and "comedy" in why
    shot = Path(os.environ.get("CRS_SCREENSHOT") or tmp_path / "serve.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    browser.find_element(By.ID, "reset").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#log li"))
