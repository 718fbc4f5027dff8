"""The pages themselves in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) searches, follows "more like this", casts three
blind votes and reads the results page; screenshots go to the test's tmp folder.
A machine without Chromium skips this test and says how to get it."""

import shutil
import threading
import time

import pytest
import torch

from retrieval.search import Searcher
from retrieval.serve.app import ServeConfig, bind, create_app

torch.set_num_threads(1)

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="headless Chromium is not installed: "
                       "`apt-get install chromium chromium-driver` (Debian) runs this test"),
]


@pytest.fixture
def server(demo_indexes, tmp_path):
    import uvicorn

    config = ServeConfig(index=demo_indexes[0], compare=demo_indexes[1],
                         votes=tmp_path / "votes.sqlite", port=0)
    app = create_app(config, {"a": Searcher.open(demo_indexes[0]),
                              "b": Searcher.open(demo_indexes[1])})
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path / "profile"
    profile.mkdir()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1200,1300"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shown(browser, element_id: str, text: str = ""):
    """The element once the page that has it (with `text` in it) has loaded: a click
    that submits a form returns before the next page is there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver):
        found = driver.find_elements(By.ID, element_id)
        return found[0] if found and text in found[0].text else False

    return WebDriverWait(browser, 30).until(ready)


def test_search_more_like_this_three_votes_and_the_results_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, app = server
    browser.get(base + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("happy pop with bright guitars")
    browser.find_element(By.ID, "search").click()
    shown(browser, "results-heading", "happy pop with bright guitars")
    results = browser.find_elements(By.CSS_SELECTOR, ".result")
    assert len(results) == 10
    players = browser.find_elements(By.CSS_SELECTOR, ".result audio")
    assert players and all(p.get_attribute("src").startswith(base + "/audio/a/")
                           for p in players)
    browser.save_screenshot(str(tmp_path / "search.png"))

    first = results[0].get_attribute("data-track")
    results[0].find_element(By.CSS_SELECTOR, "a.more").click()
    shown(browser, "results-heading", f"More like {first}")
    assert first not in [r.get_attribute("data-track")
                         for r in browser.find_elements(By.CSS_SELECTOR, ".result")]

    browser.get(base + "/")
    browser.find_element(By.ID, "q").send_keys("x" * 1001)
    browser.find_element(By.ID, "search").click()
    shown(browser, "error", "1,001 characters long")

    for query, button in (("calm piano", "vote-left"), ("sad strings", "vote-same"),
                          ("aggressive rock", "vote-right")):
        browser.get(base + "/listen")
        box = browser.find_element(By.ID, "listen-q")
        box.clear()
        box.send_keys(query)
        browser.find_element(By.ID, "listen-start").click()
        assert shown(browser, "query", query).text == f"“{query}”"
        for side in ("A", "B"):
            column = browser.find_element(By.ID, f"side-{side}")
            assert len(column.find_elements(By.CSS_SELECTOR, ".result audio")) == 5
            assert not column.find_elements(By.CSS_SELECTOR, ".score")  # blind
        if button == "vote-left":
            browser.save_screenshot(str(tmp_path / "listen.png"))
        browser.find_element(By.ID, button).click()
        shown(browser, "voted", "Vote recorded")

    browser.get(base + "/results")
    table = browser.find_element(By.ID, "results").text
    labels = app.state.adswap.labels
    assert labels["a"] in table and labels["b"] in table
    row = table.splitlines()[-1].split()
    assert row[2:6] == ["3", *row[3:5], "1"] and int(row[3]) + int(row[4]) == 2
    assert "3 votes" in browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(tmp_path / "results.png"))
    assert (tmp_path / "results.png").stat().st_size > 10_000
