"""The web app in a real browser: Debian's headless Chromium driven by selenium and chromedriver.

Nothing is downloaded (tests/browser.py points selenium at Debian's chromium and
chromedriver, offline, with a fresh profile). The app runs in uvicorn on a free port
over the same small real archive as tests/test_web.py (real SeaweedFS objects).

Every action that loads a page is followed by `browser.wait_for_new_page` (the old
document gone, the new one complete): the journey once found 0 of 2 search results
because the next command ran on the page before the search, when chromium was slow to
start the form's navigation.

Screenshots of the main pages at 1366x768 (login, search with facets, record, PDF,
correction form, corrected record, register, disposition queue, audit, ...) are the
test's artifacts: they go to var/test-artifacts/web-screens/ (ignored by git, kept
after the run for people to look at), or to $KIROKU_SCREENSHOT_DIR when set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from tests import browser
from tests.web_fixtures import MY_NUMBER, PASSWORD, web_env  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not browser.available(), reason=browser.NOT_INSTALLED)]

# every visible form field must have a <label for> (or an aria-label): JavaScript run on each page
UNLABELLED = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML.slice(0, 120));
"""


@pytest.fixture(scope="module")
def server(web_env):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(web_env.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:  # uvicorn's own flag: it is listening
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver():
    with browser.chromium(width=1366, height=768) as d:
        yield d


ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts" / "web-screens"


@pytest.fixture(scope="module")
def screens() -> Path:
    folder = browser.screenshot_dir(ARTIFACTS)
    for old in folder.glob("*.png"):  # this run's pictures only
        old.unlink()
    return folder


def _login(driver, base: str, name: str) -> None:
    """Log in with the keyboard alone: the name field has the focus, Tab to the password, Enter."""
    from selenium.webdriver.common.keys import Keys

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    field = _focused(driver, "username")
    field.send_keys(name, Keys.TAB)
    password = driver.switch_to.active_element
    assert password.get_attribute("id") == "password"
    password.send_keys(PASSWORD)
    browser.wait_for_new_page(driver, lambda: password.send_keys(Keys.ENTER))
    assert "/search" in driver.current_url, driver.page_source[:500]


def _focused(driver, element_id: str):
    """The element that has the focus, once it is `element_id`: autofocus is applied at the
    page's first rendering, which may come just after the load is complete."""
    return browser.wait_until(driver, lambda d: (lambda e: e if e.get_attribute("id") == element_id else None)(
        d.switch_to.active_element), timeout=10, message=f"#{element_id} did not get the focus")


def _page_checks(driver) -> None:
    """What every page must do at 1366x768: labels on every field, no horizontal scrolling."""
    assert driver.execute_script(UNLABELLED) == [], driver.current_url
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), \
        driver.current_url


def _tab_to(driver, css: str, limit: int = 80):
    """Press Tab until the focus is on the first element matching `css` (keyboard-only use)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    target = driver.find_element(By.CSS_SELECTOR, css)
    for _ in range(limit):
        if driver.switch_to.active_element == target:  # and the focus can be seen
            assert driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", target) != "none"
            return target
        driver.switch_to.active_element.send_keys(Keys.TAB)
    raise AssertionError(f"{css} cannot be reached with Tab on {driver.current_url}")


def test_archivist_journey_in_chromium(web_env, server, driver, screens):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ids = web_env.ids
    driver.get(f"{server}/login")
    _page_checks(driver)
    driver.save_screenshot(str(screens / "01-login.png"))
    _login(driver, server, "viewer")
    _page_checks(driver)

    # search a two-character word, with the keyboard only
    box = _focused(driver, "q")
    box.send_keys("ごみ")
    browser.wait_for_new_page(driver, lambda: box.send_keys(Keys.ENTER))
    hits = driver.find_elements(By.CSS_SELECTOR, "li.hit")
    assert len(hits) == 2, driver.current_url
    assert driver.find_elements(By.TAG_NAME, "mark")
    # the 検索 button sits on the box's line, its label on one line (it used to wrap at 1366x768)
    field, button = driver.find_element(By.ID, "q"), driver.find_element(By.CSS_SELECTOR, "form.search button")
    assert abs(button.rect["y"] - field.rect["y"]) <= 2 and button.rect["height"] <= field.rect["height"] + 2
    assert button.rect["x"] > field.rect["x"] + field.rect["width"] - 1
    _page_checks(driver)
    driver.save_screenshot(str(screens / "02-search.png"))

    # sort by 文書番号 (a link above the results), then page through one result at a time
    browser.wait_for_new_page(driver, driver.find_element(By.LINK_TEXT, "文書番号順").click)
    assert "sort=number" in driver.current_url and len(driver.find_elements(By.CSS_SELECTOR, "li.hit")) == 2
    driver.get(driver.current_url + "&per_page=1")
    first_hit = driver.find_element(By.CSS_SELECTOR, "li.hit h3").text
    browser.wait_for_new_page(driver, driver.find_element(By.CSS_SELECTOR, "a[rel=next]").click)
    assert "page=2" in driver.current_url and "sort=number" in driver.current_url
    assert driver.find_element(By.CSS_SELECTOR, "li.hit h3").text != first_hit
    assert driver.find_element(By.CSS_SELECTOR, ".pager [aria-current=page]").text == "2"
    _page_checks(driver)
    driver.save_screenshot(str(screens / "03-search-page2.png"))

    # the results as CSV, fetched by the page itself (the link's bytes)
    csv_href = driver.find_element(By.LINK_TEXT, "CSVで保存").get_attribute("href")
    text = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text().then(t => done([r.headers.get('content-type'), t])));", csv_href)
    assert text[0].startswith("text/csv") and len(text[1].strip().splitlines()) == 3 and "令和" in text[1]

    # save this search under a name, with the keyboard, and run it again from the list
    driver.get(f"{server}/search?q=" + "ごみ")
    name = driver.find_element(By.ID, "saved-name")
    name.send_keys("ごみ関係の文書")
    browser.wait_for_new_page(driver, lambda: name.send_keys(Keys.ENTER))
    saved = driver.find_element(By.LINK_TEXT, "ごみ関係の文書")
    browser.wait_for_new_page(driver, saved.click)
    assert len(driver.find_elements(By.CSS_SELECTOR, "li.hit")) == 2

    # filter by 年度 (the facet link): its count is the number of results it gives
    year_link = driver.find_element(By.XPATH, "//section[h2='年度']//a[starts-with(normalize-space(.), '2024')]")
    count = year_link.find_element(By.XPATH, "following-sibling::span[@class='count']").text
    assert "令和6年度" in year_link.text and count == "1件"
    browser.wait_for_new_page(driver, year_link.click)
    assert "fiscal_year=2024" in driver.current_url
    assert len(driver.find_elements(By.CSS_SELECTOR, "li.hit")) == 1
    assert driver.find_element(By.CSS_SELECTOR, ".summary strong").text == "1"

    # open the record with the keyboard: Tab to the hit, Enter
    link = _tab_to(driver, "li.hit h3 a")
    browser.wait_for_new_page(driver, lambda: link.send_keys(Keys.ENTER))
    assert f"/records/{ids['open']}" in driver.current_url
    assert "令和6年5月20日（2024-05-20）" in driver.page_source
    back = driver.find_element(By.PARTIAL_LINK_TEXT, "検索結果に戻る").get_attribute("href")
    assert "/search?" in back and "fiscal_year=2024" in back  # back to the filtered results
    thumbs = driver.find_elements(By.CSS_SELECTOR, ".thumbs img")
    assert len(thumbs) == 2  # made from the stored PDF on first sight, then cached
    for thumb in thumbs:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", thumb)
        browser.wait_until(driver, lambda d, t=thumb: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", t), message="thumbnail not shown")
    driver.execute_script("window.scrollTo(0, 0)")
    _page_checks(driver)
    driver.save_screenshot(str(screens / "04-record.png"))

    # its PDF: the bytes the page is given are the stored ones (SHA-256 in the browser)
    pdf = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/records/{ids['open']}/pdf').then(r => r.arrayBuffer().then(b => crypto.subtle.digest('SHA-256', b)"
        ".then(h => done([r.status, r.headers.get('content-type'), b.byteLength,"
        " Array.from(new Uint8Array(h)).map(x => x.toString(16).padStart(2, '0')).join('')]))));")
    assert pdf == [200, "application/pdf", len(web_env.pdfs["open"]), hashlib.sha256(web_env.pdfs["open"]).hexdigest()]
    # and the button opens it in the browser's own viewer, in a new tab
    start = driver.current_window_handle
    driver.find_element(By.LINK_TEXT, "PDF/A を開く").click()
    browser.wait_until(driver, lambda d: len(d.window_handles) == 2, message="the PDF did not open in a new tab")
    driver.switch_to.window(next(h for h in driver.window_handles if h != start))
    browser.wait_until(driver, lambda d: d.current_url.endswith(f"/records/{ids['open']}/pdf")
                       and d.execute_script("return document.readyState") == "complete")
    assert driver.execute_script("return document.contentType") == "application/pdf"
    browser.wait_until(driver, browser.shows_white_page, timeout=30, message="the PDF viewer drew no page")
    driver.save_screenshot(str(screens / "05-pdf.png"))
    driver.close()
    driver.switch_to.window(start)

    # a record above the viewer's clearance is refused, even by its direct URLs
    for path in ("", "/pdf", "/original", "/thumbs/1.png"):
        driver.get(f"{server}/records/{ids['secret']}{path}")
        assert "記録が見つかりません" in driver.page_source and "極秘" not in driver.page_source, path
    driver.get(f"{server}/records/{ids['secret']}")
    driver.save_screenshot(str(screens / "06-refused.png"))

    # a 文書管理者 (3B) sees the 3B record with its 個人番号 masked, and gets none of its scans
    _login(driver, server, "manager")
    driver.get(f"{server}/records/{ids['pii3b']}")
    source = driver.page_source
    assert MY_NUMBER not in source and MY_NUMBER.replace(" ", "") not in source
    assert driver.find_elements(By.ID, "scans-withheld") and not driver.find_elements(By.CSS_SELECTOR, ".thumbs img")
    _page_checks(driver)
    driver.save_screenshot(str(screens / "07-pii-withheld.png"))
    driver.get(f"{server}/records/{ids['pii3b']}/pdf")
    assert "個人番号が含まれている" in driver.page_source and "%PDF" not in driver.page_source

    # ... finds a record, corrects its 件名 and 文書日付, sees the history and the new retention,
    # and goes back to the search it came from
    driver.get(f"{server}/search?q=" + "委託" + "&sort=date_desc")
    link = driver.find_element(By.CSS_SELECTOR, "li.hit h3 a")
    browser.wait_for_new_page(driver, link.click)
    assert f"/records/{ids['open']}" in driver.current_url
    _page_checks(driver)
    title = driver.find_element(By.ID, "c-title")
    title.clear()
    title.send_keys("ごみ収集運搬業務委託契約書")
    date = driver.find_element(By.ID, "c-document_date")
    date.clear()
    date.send_keys("令和7年5月20日")
    reason = driver.find_element(By.ID, "c-reason")
    reason.send_keys("件名と日付の読み誤り")
    form = driver.find_element(By.CSS_SELECTOR, "form.correct")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", form)
    driver.save_screenshot(str(screens / "08-correction.png"))
    browser.wait_for_new_page(driver, lambda: reason.send_keys(Keys.ENTER))
    assert "修正を保存しました" in driver.page_source, driver.page_source[:800]
    history = driver.find_element(By.CSS_SELECTOR, "ol.events").text
    assert "修正" in history and "件名と日付の読み誤り" in history and "manager" in history
    retention = driver.find_element(By.XPATH, "//section[h2='保存期間']").text
    # 件名 corrected: the schedule is matched again (type:契約書 → 10年 廃棄, the fixture had 5年);
    # 文書日付 令和7年5月20日 → 2025年度 → 起算日 2026-04-01, 10年 → 満了日 2036-03-31
    assert "10年" in retention and "令和8年4月1日（2026-04-01）" in retention, retention
    assert "令和18年3月31日（2036-03-31）" in retention, retention
    assert "保存期間: 5年 → 10年" in history
    assert "2025年度" in driver.page_source
    panel = driver.find_element(By.XPATH, "//section[h2='保存期間']")  # the new retention and the history below it
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    driver.save_screenshot(str(screens / "09-corrected.png"))
    last = driver.find_elements(By.CSS_SELECTOR, "ol.events li")[-1]  # the correction's own entry, whole
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", last)
    driver.save_screenshot(str(screens / "09b-corrected-history.png"))
    # 検索結果に戻る still knows the search (the correction went through a POST and a redirect)
    back = driver.find_element(By.PARTIAL_LINK_TEXT, "検索結果に戻る")
    browser.wait_for_new_page(driver, back.click)
    assert "/search?" in driver.current_url and "sort=date_desc" in driver.current_url
    # search reflects it at once
    assert "ごみ収集運搬業務委託契約書" in driver.find_element(By.CSS_SELECTOR, "li.hit h3").text

    driver.get(f"{server}/manage/disposition")
    assert ids["due"] in driver.page_source
    _page_checks(driver)
    driver.save_screenshot(str(screens / "10-disposition.png"))
    driver.get(f"{server}/manage/register?fiscal_year=2025")
    assert "ごみ収集運搬業務委託契約書" in driver.page_source
    _page_checks(driver)
    driver.save_screenshot(str(screens / "11-register.png"))

    _login(driver, server, "auditor")
    driver.get(f"{server}/audit")
    assert "ログイン" in driver.page_source and "個人番号を含むため" in driver.page_source
    _page_checks(driver)
    driver.save_screenshot(str(screens / "12-audit.png"))
    today_jst = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).date()
    assert today_jst.isoformat() in driver.page_source and "日時（日本時間）" in driver.page_source
