"""Debian's headless Chromium for the browser tests (tests/test_web_browser.py, tests/test_prefect_ui.py).

One place for how Chromium is started on this project's machines, whose network is
closed: nothing may be downloaded (Selenium Manager is kept offline and pointed at
Debian's /usr/bin/chromedriver), Chromium must not phone home (background networking,
component updates, sync) and every session gets a fresh profile that is removed after.

It also holds the one waiting rule the tests need: an action that loads a new page
(pressing Enter in a form, clicking a link) is followed by `wait_for_new_page`, which
waits for the old document to be gone and the new one to be complete. chromedriver
does not promise that by itself: when the renderer is slow to start the navigation (a
loaded CI machine) the next command runs on the old page, which is how the web test
once saw 0 of 2 search results.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMEDRIVER", "CLOSED_NETWORK_FLAGS", "available", "chromium", "screenshot_dir", "shows_white_page",
           "wait_for_new_page", "wait_until"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# The flags this machine's closed network needs; a fresh --user-data-dir is added per session.
CLOSED_NETWORK_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--disable-dev-shm-usage", "--lang=ja")
NOT_INSTALLED = "Debian chromium and chromium-driver are not installed (deploy/bootstrap.sh installs them)"


def available() -> bool:
    """Whether Debian's chromium and chromium-driver are both installed."""
    return bool(CHROMIUM and CHROMEDRIVER)


@contextmanager
def chromium(*, width: int = 1366, height: int = 768, page_load_timeout: float = 60) -> Iterator[Any]:
    """A selenium WebDriver on a headless Chromium with a fresh profile, quit and removed after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not available():
        raise RuntimeError(NOT_INSTALLED)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    profile = Path(tempfile.mkdtemp(prefix="kiroku-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (*CLOSED_NETWORK_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(page_load_timeout)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(driver: Any, condition: Callable[[Any], Any], *, timeout: float = 30, message: str = "") -> Any:
    """Poll `condition(driver)` until it is truthy (its value is returned) or fail after `timeout` s."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def wait_for_new_page(driver: Any, action: Callable[[], Any], *, timeout: float = 30) -> None:
    """Do `action` (which loads a new page) and wait until that page has replaced the old one.

    The condition is the real one: the old <html> element is detached (its document is
    gone) and the new document's readyState is 'complete'. No sleeping.
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    action()

    def replaced(d: Any) -> bool:
        try:
            old.is_enabled()  # any call on a detached element raises
            return False
        except StaleElementReferenceException:
            return d.execute_script("return document.readyState") == "complete"

    wait_until(driver, replaced, timeout=timeout, message=f"the page after the action did not load: {driver.current_url}")


def shows_white_page(driver: Any, fraction: float = 0.1) -> bool:
    """Whether at least `fraction` of the window is pure white: the browser's PDF viewer has
    drawn a page (it draws in its own process, out of reach of the DOM; its grey frame alone
    has no white)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
    histogram = image.histogram()
    return histogram[255] >= fraction * image.width * image.height


def screenshot_dir(fallback: Path) -> Path:
    """Where screenshots go: $KIROKU_SCREENSHOT_DIR when set (for a person to look at), else `fallback`
    (the test's tmp_path). Never inside the repository's tracked files."""
    folder = Path(os.environ.get("KIROKU_SCREENSHOT_DIR") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
