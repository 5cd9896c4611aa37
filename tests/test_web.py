"""The archivists' web app over HTTP: every rule of issue 11, against real SeaweedFS objects.

TestClient drives the real FastAPI app; records are stored in the session's SeaweedFS
(tests/services_fixtures.py) and catalogued in a SQLite catalog (tests/web_fixtures.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from fastapi.testclient import TestClient

from tests.web_fixtures import MY_NUMBER, PASSWORD, login, web_env  # noqa: F401 - fixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def client_for(env, name: str | None = None) -> TestClient:
    client = TestClient(env.app())
    if name:
        assert login(client, name).status_code == 303
    return client


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


def total(html: str) -> int:
    return int(re.search(r"<strong>(\d+)</strong> 件", html).group(1))


# ------------------------------------------------------------------ login, sessions, CSRF


def test_login_sets_httponly_samesite_session_and_needs_csrf(web_env):
    client = TestClient(web_env.app())
    page = client.get("/login")
    assert 'name="csrf_token"' in page.text and 'name="username"' in page.text and 'name="password"' in page.text
    refused = client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": "forged"},
                          follow_redirects=False)
    assert refused.status_code == 400 and "kiroku_session" not in refused.headers.get("set-cookie", "")
    ok = login(client, "viewer")
    assert ok.status_code == 303
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("kiroku_session="))
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert client.get("/search").status_code == 200
    wrong = login(TestClient(web_env.app()), "viewer", "wrong-password")
    assert wrong.status_code == 401 and "パスワードが違います" in wrong.text


def test_pages_and_api_refuse_without_login(web_env):
    client = TestClient(web_env.app())
    rid = web_env.ids["open"]
    for path in ("/search?q=契約", f"/records/{rid}", f"/records/{rid}/pdf", f"/records/{rid}/original",
                 f"/records/{rid}/thumbs/1.png", "/manage/register", "/audit"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    assert client.get("/api/search?q=契約").status_code == 401
    assert client.get("/api/search?q=契約", headers={"Authorization": "Bearer nonsense"}).status_code == 401


def test_forms_refuse_a_missing_csrf_token(web_env):
    client = client_for(web_env, "manager")
    rid = web_env.ids["open"]
    response = client.post(f"/records/{rid}/correct", data={"title": "改ざん", "reason": "x"})
    assert response.status_code == 400 and "有効期限" in response.text
    assert web_env.catalog.get(rid).metadata.title == "ごみ収集業務委託契約書"


def test_login_attempts_are_rate_limited(tmp_path):
    from kiroku.config import load_settings
    from processors.archive.catalog import Catalog
    from processors.archive.users import Users
    from web.app import LOGIN_LIMIT, create_app

    url = f"sqlite:///{tmp_path / 'c.db'}"
    catalog = Catalog(url)
    Users(catalog.engine).add("clerk", PASSWORD, role="閲覧者", clearance="2")
    client = TestClient(create_app(load_settings(home=tmp_path, inbox=tmp_path / "in", catalog_url=url),
                                   catalog=catalog))
    for _ in range(LOGIN_LIMIT):
        assert login(client, "clerk", "guess-guess-guess").status_code == 401
    blocked = login(client, "clerk", PASSWORD)  # even the right password, for a while
    assert blocked.status_code == 429 and "しばらくログインできません" in blocked.text
    catalog.close()


# ------------------------------------------------------------------ search


def test_search_folds_kana_width_and_old_kanji(web_env):
    client = client_for(web_env, "viewer")
    open_id = web_env.ids["open"]
    for query in ("ゴミ", "ごみ", "單位", "単位", "ｺﾞﾐ", "委託"):
        page = client.get("/search", params={"q": query})
        assert open_id in page.text, query
    page = client.get("/search", params={"q": "ゴミ"})
    assert "<mark>" in page.text  # highlighted snippet


def test_search_phrases_or_not(web_env):
    client = client_for(web_env, "viewer")
    ids = web_env.ids

    def found(q: str) -> set[str]:
        data = client.get("/api/search", params={"q": q}).json()
        return {r["id"] for r in data["results"]}

    assert found('"収集運搬業務"') == {ids["open"]}
    assert found('"運搬 収集"') == set()
    assert found("委託 OR 減量") == {ids["open"], ids["due"]}
    assert found("ごみ -委託") == {ids["due"]}
    assert found("ごみ 減量") == {ids["due"]}


def test_filters_accept_wareki_and_seireki_and_count_facets(web_env):
    client = client_for(web_env, "viewer")
    ids = web_env.ids
    for start in ("令和6年4月1日", "R6.4.1", "2024-04-01"):
        data = client.get("/api/search", params={"date_from": start, "date_to": "R7.3.31"}).json()
        assert {r["id"] for r in data["results"]} == {ids["open"]}, start
    data = client.get("/api/search", params={"fiscal_year": "令和元年度"}).json()
    assert [r["id"] for r in data["results"]] == [ids["due"]]
    data = client.get("/api/search", params={"q": "ごみ"}).json()
    assert data["facets"]["document_type"] == {"契約書": 1, "通知": 1}
    assert data["facets"]["fiscal_year"] == {"2024": 1, "2019": 1}
    data = client.get("/api/search", params={"amount_min": "100万", "amount_max": "2,000,000"}).json()
    assert [r["id"] for r in data["results"]] == [ids["open"]]
    data = client.get("/api/search", params={"disposition": "移管"}).json()
    assert [r["id"] for r in data["results"]] == [ids["due"]]
    bad = client.get("/search", params={"date_from": "令和99年13月1日"})
    assert bad.status_code == 400 and "日付として読めません" in bad.text
    page = client.get("/search", params={"q": "ごみ", "sort": "date_asc"})
    assert page.text.index(ids["due"]) < page.text.index(ids["open"])


def test_pagination_and_csv(web_env):
    client = client_for(web_env, "viewer")
    data = client.get("/api/search", params={"q": "ごみ", "limit": 1}).json()
    assert data["total"] == 2 and len(data["results"]) == 1
    second = client.get("/api/search", params={"q": "ごみ", "limit": 1, "page": 2}).json()
    assert second["results"][0]["id"] != data["results"][0]["id"]
    response = client.get("/search.csv", params={"q": "ごみ"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["ID", "件名", "文書種別"] and len(rows) == 3


def test_saved_searches_belong_to_their_user(web_env):
    viewer = client_for(web_env, "viewer")
    page = viewer.get("/search", params={"q": "ごみ"})
    response = viewer.post("/saved", data={"csrf_token": csrf_of(page.text), "name": "ごみ関係",
                                           "query": "q=%E3%81%94%E3%81%BF"}, follow_redirects=False)
    assert response.status_code == 303
    assert "ごみ関係" in viewer.get("/search").text
    assert "ごみ関係" not in client_for(web_env, "auditor").get("/search").text


def test_api_search_with_a_token(web_env):
    from processors.archive.users import Users

    token = Users(web_env.catalog.engine).new_token("viewer")
    data = TestClient(web_env.app()).get("/api/search", params={"q": "契約", "type": "契約書"},
                                         headers={"Authorization": f"Bearer {token}"}).json()
    assert data["total"] == 1
    hit = data["results"][0]
    assert {"id", "title", "document_type", "document_date"} <= hit.keys()
    assert hit["id"] == web_env.ids["open"] and hit["document_date"] == "2024-05-20"


# ------------------------------------------------------------------ clearance


def test_a_record_above_clearance_appears_nowhere(web_env):
    ids = web_env.ids
    viewer = client_for(web_env, "viewer")  # clearance 2
    data = viewer.get("/api/search", params={"q": "契約"}).json()
    assert [r["id"] for r in data["results"]] == [ids["open"]] and data["total"] == 1
    assert "機密性3A" not in data["facets"]["classification"] and "機密性3B" not in data["facets"]["classification"]
    assert viewer.get("/api/search", params={"q": "極秘"}).json()["total"] == 0
    page = viewer.get("/search", params={"q": "契約"})
    assert total(page.text) == 1 and ids["secret"] not in page.text and "極秘" not in page.text
    assert ids["secret"] not in viewer.get("/search.csv", params={"q": "契約"}).text
    assert ids["secret"] not in viewer.get("/api/search", params={"classification": "機密性3A"}).text
    missing = viewer.get("/records/web-no-such-record")
    for rid in (ids["secret"], ids["pii3b"]):
        for suffix in ("", "/pdf", "/original", "/thumbs/1.png"):
            response = viewer.get(f"/records/{rid}{suffix}")
            assert response.status_code == 404, suffix
            assert response.text == missing.text.replace("web-no-such-record", rid) or "見つかりません" in response.text
            assert "極秘" not in response.text and "児童手当" not in response.text
    # the 3A user sees it
    admin = client_for(web_env, "admin")
    assert admin.get(f"/records/{ids['secret']}").status_code == 200
    assert admin.get("/api/search", params={"q": "契約"}).json()["total"] == 2


def test_my_number_masked_unless_cleared_3a(web_env):
    rid = web_env.ids["pii3b"]
    digits = MY_NUMBER.replace(" ", "")
    manager = client_for(web_env, "manager")  # 3B: may see the record, not the 個人番号
    page = manager.get(f"/records/{rid}")
    assert page.status_code == 200 and "児童手当" in page.text
    assert MY_NUMBER not in page.text and digits not in page.text and "＊＊＊＊ ＊＊＊＊ ＊＊＊＊" in page.text
    hits = manager.get("/api/search", params={"q": "請求者"}).json()["results"]
    assert hits and MY_NUMBER not in hits[0]["snippet"]
    admin = client_for(web_env, "admin")
    assert MY_NUMBER in admin.get(f"/records/{rid}").text


def test_scans_of_a_record_with_a_my_number_are_withheld_unless_cleared_3a(web_env):
    """Decision: refuse, not mask. The number is in the scan's pixels and the PDF/A text
    layer; a masked rendition would leak wherever OCR missed it."""
    rid = web_env.ids["pii3b"]
    manager = client_for(web_env, "manager")  # 3B: may see the record, not its 個人番号
    page = manager.get(f"/records/{rid}")
    assert 'id="scans-withheld"' in page.text and f"/records/{rid}/thumbs/" not in page.text
    assert f'href="/records/{rid}/pdf"' not in page.text and f'href="/records/{rid}/original"' not in page.text
    for path in ("pdf", "original", "thumbs/1.png"):
        refused = manager.get(f"/records/{rid}/{path}")
        assert refused.status_code == 403, path
        assert "個人番号が含まれている" in refused.text and "取扱資格 3A" in refused.text, path
        assert refused.headers["content-type"].startswith("text/html") and b"%PDF" not in refused.content
    assert not (web_env.home / "thumbs" / rid).exists()  # not even made for a refused user
    admin = client_for(web_env, "admin")  # 3A
    assert f"/records/{rid}/thumbs/1.png" in admin.get(f"/records/{rid}").text
    assert admin.get(f"/records/{rid}/pdf").content == web_env.pdfs["pii3b"]
    assert admin.get(f"/records/{rid}/original").content == web_env.originals["pii3b"]
    auditor = client_for(web_env, "auditor")
    denied = auditor.get("/audit", params={"user": "manager", "action": "denied"}).text
    assert "PDF取得: 個人番号を含むため" in denied and "サムネイル: 個人番号を含むため" in denied


def test_a_my_number_only_in_the_text_also_withholds_the_scans(web_env):
    from web.app import has_my_number

    record = web_env.catalog.get(web_env.ids["pii3b"])
    assert has_my_number(record.model_copy(update={"pii": []}))  # the reader missed it; the text has it
    assert not has_my_number(web_env.catalog.get(web_env.ids["open"]))


# ------------------------------------------------------------------ record page, PDF, original, thumbnails


def test_record_page_pdf_original_and_thumbnails(web_env):
    rid = web_env.ids["open"]
    client = client_for(web_env, "viewer")
    page = client.get(f"/records/{rid}")
    assert page.status_code == 200
    for expected in ("令和6年5月20日（2024-05-20）", "満了日", "機密性2", "受付", "保管", "ゴミ収集運搬業務"):
        assert expected in page.text, expected
    pdf = client.get(f"/records/{rid}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content == web_env.pdfs["open"] and pdf.headers["content-disposition"].startswith("inline")
    original = client.get(f"/records/{rid}/original")
    assert original.content == web_env.originals["open"] and original.headers["content-type"] == "image/png"
    first = client.get(f"/records/{rid}/thumbs/1.png")
    assert first.status_code == 200 and first.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/records/{rid}/thumbs/2.png").status_code == 200
    assert client.get(f"/records/{rid}/thumbs/3.png").status_code == 404
    cached = next((web_env.home / "thumbs" / rid).rglob("1.png"))
    made = cached.stat().st_mtime_ns
    assert client.get(f"/records/{rid}/thumbs/1.png").content == first.content
    assert cached.stat().st_mtime_ns == made  # made once, served from the cache


def test_back_link_returns_to_the_search_it_came_from(web_env):
    client = client_for(web_env, "viewer")
    rid = web_env.ids["open"]
    came = client.get(f"/records/{rid}", headers={"referer": "http://testserver/search?q=%E3%81%94%E3%81%BF&page=1"})
    assert 'href="/search?q=%E3%81%94%E3%81%BF&amp;page=1"' in came.text
    elsewhere = client.get(f"/records/{rid}", headers={"referer": "http://evil.example/search?q=x"})
    assert 'href="/search">← 検索結果に戻る' in elsewhere.text and "javascript:" not in elsewhere.text


def test_a_tampered_archive_copy_is_not_served(web_env):
    from processors.archive.catalog import Catalog  # noqa: F401

    rid = web_env.ids["due"]
    record = web_env.catalog.get(rid)
    bad = record.model_copy(update={"archive": record.archive.model_copy(update={"sha256": "0" * 64})})
    web_env.catalog.add(bad)
    try:
        response = client_for(web_env, "viewer").get(f"/records/{rid}/pdf")
        assert response.status_code == 502 and "チェックサム" in response.text
    finally:
        web_env.catalog.add(record)


# ------------------------------------------------------------------ correction and records management


def test_correction_is_a_new_version_with_history_and_search_follows(web_env, seaweed, seaweed_bucket):
    rid = web_env.ids["open"]
    viewer = client_for(web_env, "viewer")
    page = viewer.get(f"/records/{rid}")
    assert "修正を保存" not in page.text
    assert viewer.post(f"/records/{rid}/correct", data={"csrf_token": csrf_of(page.text), "title": "x",
                                                        "reason": "y"}).status_code == 403
    manager = client_for(web_env, "manager")
    page = manager.get(f"/records/{rid}")
    token = csrf_of(page.text)
    no_reason = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "title": "新しい件名"})
    assert "理由を入力してください" in no_reason.text
    response = manager.post(f"/records/{rid}/correct", data={
        "csrf_token": token, "title": "家庭ごみ収集運搬業務委託契約書", "document_date": "令和6年5月21日",
        "reason": "件名と日付の読み誤り"})
    assert response.status_code == 200 and "修正を保存しました" in response.text
    record = web_env.catalog.get(rid)
    assert record.metadata.title == "家庭ごみ収集運搬業務委託契約書"
    assert record.metadata.document_date == dt.date(2024, 5, 21)
    event = record.events[-1]
    assert event.type == "corrected" and event.agent == "manager" and "件名と日付の読み誤り" in event.detail
    assert "家庭ごみ収集運搬業務委託契約書" in response.text and "件名と日付の読み誤り" in response.text
    hits = viewer.get("/api/search", params={"q": "家庭ごみ"}).json()["results"]
    assert [h["id"] for h in hits] == [rid] and hits[0]["document_date"] == "2024-05-21"
    client = seaweed.store(seaweed_bucket).client
    versions = client.list_object_versions(Bucket=seaweed_bucket, Prefix=record.archive.record_key)["Versions"]
    versions = [v for v in versions if v["Key"] == record.archive.record_key]
    assert len(versions) >= 2  # the earlier record.json stays, locked
    oldest = min(versions, key=lambda v: v["LastModified"])
    assert client.get_object_retention(Bucket=seaweed_bucket, Key=oldest["Key"], VersionId=oldest["VersionId"])


def test_register_matches_the_cli_export_and_respects_clearance(web_env, tmp_path):
    from processors.archive.catalog import write_register_csv

    manager = client_for(web_env, "manager")
    page = manager.get("/manage/register", params={"fiscal_year": "令和6年度"})
    assert page.status_code == 200 and "行政文書ファイル管理簿" in page.text
    response = manager.get("/manage/register.csv", params={"fiscal_year": "2024"})
    expected = tmp_path / "cli.csv"
    rows = web_env.catalog.register_rows(2024)
    write_register_csv([r for r in rows if web_env.ids["secret"] not in r["備考"]], expected)
    assert response.content == expected.read_bytes()
    assert web_env.ids["secret"] not in response.text  # 3A, above the manager's 3B
    assert client_for(web_env, "viewer").get("/manage/register").status_code == 403


def test_disposition_queue_approval_is_recorded_and_deletes_nothing(web_env, seaweed, seaweed_bucket):
    rid = web_env.ids["due"]
    manager = client_for(web_env, "manager")
    page = manager.get("/manage/disposition")
    assert rid in page.text and "移管（1 件）" in page.text
    assert web_env.ids["open"] not in page.text
    response = manager.post(f"/records/{rid}/approve", data={
        "csrf_token": csrf_of(page.text), "reason": "歴史資料として移管", "from": "queue"})
    assert response.status_code == 200 and "承認しました" in response.text
    record = web_env.catalog.get(rid)
    assert record.events[-1].type == "disposition_approved" and "歴史資料として移管" in record.events[-1].detail
    assert "承認済み" in manager.get("/manage/disposition").text
    again = manager.post(f"/records/{rid}/approve", data={"csrf_token": csrf_of(page.text), "reason": "再"})
    assert "すでに承認" in again.text
    store = seaweed.store(seaweed_bucket)
    assert store.head(record.archive.key, record.archive.version_id).size > 0  # still there


def test_legal_hold_on_and_off_and_extension(web_env, seaweed, seaweed_bucket):
    rid = web_env.ids["open"]
    manager = client_for(web_env, "manager")
    token = csrf_of(manager.get(f"/records/{rid}").text)
    store = seaweed.store(seaweed_bucket)
    response = manager.post(f"/records/{rid}/hold", data={"csrf_token": token, "on": "1", "reason": "訴訟のため"})
    assert "リーガルホールドを設定しました" in response.text
    record = web_env.catalog.get(rid)
    assert record.retention.legal_hold
    assert store.retention_of(record.archive.key, record.archive.version_id).legal_hold
    response = manager.post(f"/records/{rid}/hold", data={"csrf_token": token, "on": "0", "reason": "訴訟終結"})
    assert "解除しました" in response.text
    record = web_env.catalog.get(rid)
    assert not record.retention.legal_hold
    lock = store.retention_of(record.archive.key, record.archive.version_id)
    assert not lock.legal_hold and lock.retained_through >= record.retention.expiry_date
    old_expiry = record.retention.expiry_date
    shorter = manager.post(f"/records/{rid}/extend", data={"csrf_token": token, "until": "2025-01-01",
                                                           "reason": "誤り"})
    assert "延長できません" in shorter.text
    later = old_expiry.replace(year=old_expiry.year + 5)
    response = manager.post(f"/records/{rid}/extend", data={"csrf_token": token, "until": later.isoformat(),
                                                            "reason": "事業継続のため"})
    assert "延長しました" in response.text
    record = web_env.catalog.get(rid)
    assert record.retention.expiry_date == later and record.events[-1].type == "retention_extended"
    assert store.retention_of(record.archive.key, record.archive.version_id).retained_through >= later
    assert [e.type for e in record.events].count("legal_hold") == 2


# ------------------------------------------------------------------ audit


def test_every_search_view_and_download_is_audited_and_exportable(web_env):
    viewer = client_for(web_env, "viewer")
    rid = web_env.ids["open"]
    viewer.get("/search", params={"q": "監査テスト語"})
    viewer.get(f"/records/{rid}")
    viewer.get(f"/records/{rid}/pdf")
    viewer.get(f"/records/{rid}/original")
    viewer.get(f"/records/{web_env.ids['secret']}")  # refused: recorded as such
    assert viewer.get("/audit").status_code == 403
    auditor = client_for(web_env, "auditor")
    page = auditor.get("/audit", params={"user": "viewer"})
    assert page.status_code == 200
    for label in ("検索", "閲覧", "PDF取得", "原本取得", "拒否", "キーワード「監査テスト語」"):
        assert label in page.text, label  # a logged search is shown in words, not as a query string
    exported = auditor.get("/audit.csv", params={"user": "viewer"})
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0] == ["日時(日本時間)", "日付(和暦)", "利用者", "操作", "記録ID", "内容", "接続元"]
    actions = {row[3] for row in rows[1:]}
    assert {"検索", "閲覧", "PDF取得", "原本取得", "拒否", "ログイン"} <= actions


# ------------------------------------------------------------------ users on the command line


def test_users_cli_add_list_disable_token(web_env, monkeypatch):
    from typer.testing import CliRunner

    from kiroku.cli import app

    monkeypatch.setenv("KIROKU_CATALOG_URL", web_env.settings.catalog)
    monkeypatch.setenv("KIROKU_HOME", str(web_env.home))
    monkeypatch.setenv("KIROKU_PASSWORD", "cli-password-123")
    runner = CliRunner()
    result = runner.invoke(app, ["users", "add", "clerk2", "--role", "文書管理者", "--clearance", "3C"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["users", "add", "clerk3", "--role", "課長", "--clearance", "2"]).exit_code == 1
    listed = runner.invoke(app, ["users", "list"])
    assert "clerk2" in listed.output and "3C" in listed.output
    token = runner.invoke(app, ["users", "token", "clerk2"]).output.strip().splitlines()[-1]
    client = client_for(web_env, None)
    assert login(client, "clerk2", "cli-password-123").status_code == 303
    assert client.get("/api/search", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert runner.invoke(app, ["users", "disable", "clerk2"]).exit_code == 0
    assert client.get("/search", follow_redirects=False).status_code == 303  # the session ended
    assert client.get("/api/search", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert login(TestClient(web_env.app()), "clerk2", "cli-password-123").status_code == 401


# ------------------------------------------------------------------ a corrected date moves the retention


def _store_extra(web_env, name: str, day: dt.date, start: dt.date, expiry: dt.date) -> str:
    """One more 機密性2 record, stored and catalogued (its words match no other test's search)."""
    import uuid

    from processors.archive.archiving import store_record
    from tests.web_fixtures import _page_png, _pdf, _record

    rid = f"web{uuid.uuid4().hex[:8]}{name}"
    original, pdf = _page_png(rid), _pdf(1, rid)
    record = _record(rid, original, title="第3回庁議の会議録", text="庁議 会議録", doc_type="会議録",
                     classification="機密性2", day=day, expiry=expiry)
    record = record.model_copy(update={"retention": record.retention.model_copy(update={"start_date": start})})
    (web_env.home / f"{rid}.png").write_bytes(original)
    (web_env.home / f"{rid}.pdf").write_bytes(pdf)
    web_env.catalog.add(store_record(web_env.store_factory(), record, web_env.home / f"{rid}.pdf",
                                     web_env.home / f"{rid}.png"))
    return rid


def test_a_date_correction_recomputes_the_retention_and_moves_the_lock(web_env, seaweed, seaweed_bucket):
    rid = _store_extra(web_env, "dated", dt.date(2024, 5, 20), dt.date(2025, 4, 1), dt.date(2030, 3, 31))
    store = seaweed.store(seaweed_bucket)
    manager = client_for(web_env, "manager")
    token = csrf_of(manager.get(f"/records/{rid}").text)

    # later: 2026年度 → 起算日 2027-04-01, 5年 → 満了日 2032-03-31; both stored objects locked that long
    page = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "document_date": "R8.6.1",
                                                         "fiscal_year": "2024", "reason": "日付の読み誤り"})
    assert "修正を保存しました" in page.text
    record = web_env.catalog.get(rid)
    assert record.metadata.fiscal_year == 2026
    assert (record.retention.start_date, record.retention.expiry_date) == (dt.date(2027, 4, 1), dt.date(2032, 3, 31))
    assert "令和9年4月1日（2027-04-01）" in page.text and "令和14年3月31日（2032-03-31）" in page.text
    assert "満了日: 2030-03-31 → 2032-03-31" in record.events[-1].detail
    for key, version in ((record.archive.key, record.archive.version_id),
                         (record.archive.original_key, record.archive.original_version_id)):
        assert store.retention_of(key, version).retained_through >= dt.date(2032, 3, 31)
    assert record.archive.retain_until >= dt.date(2032, 3, 31)
    hits = manager.get("/api/search", params={"q": "庁議", "expiry_from": "2032-03-31"}).json()["results"]
    assert [h["id"] for h in hits] == [rid]  # search follows at once

    # earlier: the 満了日 follows the date, the locks cannot be shortened and the page says so
    page = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "document_date": "2023-05-01",
                                                         "fiscal_year": "2026", "reason": "再確認"})
    record = web_env.catalog.get(rid)
    assert (record.retention.start_date, record.retention.expiry_date) == (dt.date(2024, 4, 1), dt.date(2029, 3, 31))
    assert store.retention_of(record.archive.key, record.archive.version_id).retained_through >= dt.date(2032, 3, 31)
    assert record.archive.retain_until >= dt.date(2032, 3, 31)
    assert 'id="lock-note"' in page.text and "ロックは短縮できません" in page.text


def test_recomputed_retention_keeps_the_period_and_an_explicit_extension():
    from processors.archive.stewardship import recomputed_retention
    from schemas.record import Retention

    five = Retention(rule="type:通知", period="5年", period_years=5, start_date=dt.date(2025, 4, 1),
                     expiry_date=dt.date(2030, 3, 31), disposition="廃棄")
    moved = recomputed_retention(five, dt.date(2024, 3, 31))  # 2023年度
    assert (moved.start_date, moved.expiry_date, moved.period) == (dt.date(2024, 4, 1), dt.date(2029, 3, 31), "5年")
    assert recomputed_retention(five, dt.date(2024, 3, 31), "calendar").start_date == dt.date(2025, 1, 1)
    extended = five.model_copy(update={"expiry_date": dt.date(2040, 3, 31), "rule": "type:通知+extended"})
    assert recomputed_retention(extended, dt.date(2026, 5, 1)).expiry_date == dt.date(2040, 3, 31)
    assert recomputed_retention(five, None).expiry_date is None  # no date: held until one is given
    permanent = five.model_copy(update={"period": "永年", "period_years": None, "expiry_date": None})
    assert recomputed_retention(permanent, dt.date(2026, 5, 1)).expiry_date is None


# ------------------------------------------------------------------ a corrected 文書種別 or 件名 re-matches the schedule


def _store_retained(web_env, name: str, *, title: str, doc_type: str, day: dt.date, text: str,
                    events_at: dt.datetime | None = None) -> str:
    """One more 機密性2 record retained as the pipeline would (assign_retention over schemas/retention.yaml)."""
    import uuid

    from processors.archive.archiving import store_record
    from processors.records.retention import assign_retention
    from tests.web_fixtures import _page_png, _pdf, _record

    rid = f"web{uuid.uuid4().hex[:8]}{name}"
    original, pdf = _page_png(rid), _pdf(1, rid)
    record = _record(rid, original, title=title, text=text, doc_type=doc_type, classification="機密性2", day=day,
                     expiry=dt.date(2030, 3, 31))
    record = record.model_copy(update={"retention": assign_retention(record.metadata)})
    if events_at is not None:
        record = record.model_copy(update={"events": [e.model_copy(update={"at": events_at}) for e in record.events]})
    (web_env.home / f"{rid}.png").write_bytes(original)
    (web_env.home / f"{rid}.pdf").write_bytes(pdf)
    web_env.catalog.add(store_record(web_env.store_factory(), record, web_env.home / f"{rid}.pdf",
                                     web_env.home / f"{rid}.png"))
    return rid


def _locks(store, record) -> list[dt.date]:
    arc = record.archive
    return [store.retention_of(key, version).retained_through
            for key, version in ((arc.key, arc.version_id), (arc.original_key, arc.original_version_id))]


def test_a_type_or_title_correction_rematches_the_retention_rule_and_moves_the_locks(web_env, seaweed,
                                                                                       seaweed_bucket):
    rid = _store_retained(web_env, "retype", title="防災訓練の実施について", doc_type="通知", day=dt.date(2024, 5, 20),
                          text="防災訓練 実施 通知")
    store = seaweed.store(seaweed_bucket)
    record = web_env.catalog.get(rid)
    assert (record.retention.period, record.retention.disposition, record.retention.expiry_date) == (
        "3年", "廃棄", dt.date(2028, 3, 31))  # type:通知
    manager = client_for(web_env, "manager")
    token = csrf_of(manager.get(f"/records/{rid}").text)

    # 通知 → 議事録: type rule 10年 移管; 起算日 stays 2025-04-01, 満了日 2035-03-31; both objects locked that long
    page = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "document_type": "議事録",
                                                         "reason": "種別の読み誤り"})
    assert "修正を保存しました" in page.text and "保存期間を判定し直しました: 10年・移管" in page.text
    record = web_env.catalog.get(rid)
    ret = record.retention
    assert (ret.rule, ret.period, ret.disposition, ret.start_date, ret.expiry_date) == (
        "type:議事録", "10年", "移管", dt.date(2025, 4, 1), dt.date(2035, 3, 31))
    assert all(lock >= dt.date(2035, 3, 31) for lock in _locks(store, record))
    assert record.archive.retain_until >= dt.date(2035, 3, 31)
    event = record.events[-1]
    for part in ("文書種別: 通知 → 議事録", "保存期間: 3年 → 10年", "移管/廃棄: 廃棄 → 移管", "満了日: 2028-03-31 → 2035-03-31",
                 "種別の読み誤り"):
        assert part in event.detail, part
    history = page.text[page.text.index("<h2>履歴</h2>"):]
    assert "保存期間: 3年 → 10年" in history and "manager" in history
    assert "満了日: 令和10年3月31日（2028-03-31） → 令和17年3月31日（2035-03-31）" in history  # both calendars
    retention = page.text[page.text.index("<h2>保存期間</h2>"):page.text.index("<h2>個人情報</h2>")]
    assert "10年" in retention and "移管" in retention and "令和17年3月31日（2035-03-31）" in retention
    hits = manager.get("/api/search", params={"q": "防災訓練", "retention_period": "10年"}).json()["results"]
    assert [h["id"] for h in hits] == [rid] and hits[0]["disposition"] == "移管"  # search follows at once

    # back to 通知 but a 件名 with 予算: the keyword rule wins over the type rule (10年 移管 still)
    page = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "document_type": "通知",
                                                         "title": "防災訓練予算の執行について", "reason": "件名の読み誤り"})
    ret = web_env.catalog.get(rid).retention
    assert (ret.rule, ret.period, ret.disposition) == ("keyword:予算", "10年", "移管")

    # a 件名 without it: 3年 廃棄, 満了日 earlier; the locks cannot be shortened and the page says so
    page = manager.post(f"/records/{rid}/correct", data={"csrf_token": token, "title": "防災訓練の実施について",
                                                         "reason": "再確認"})
    record = web_env.catalog.get(rid)
    assert (record.retention.period, record.retention.disposition, record.retention.expiry_date) == (
        "3年", "廃棄", dt.date(2028, 3, 31))
    assert all(lock >= dt.date(2035, 3, 31) for lock in _locks(store, record))
    assert record.archive.retain_until >= dt.date(2035, 3, 31)
    assert 'id="lock-note"' in page.text and "ロックは短縮できません" in page.text
    assert "保存庫のロックは短縮できないため" in page.text


def test_rematched_retention_uses_the_configured_schedule_and_keeps_holds_and_extensions(tmp_path):
    from processors.archive.stewardship import rematched_retention
    from processors.records.retention import SCHEDULE_PATH
    from schemas.record import Metadata, Retention

    three = Retention(rule="type:通知", period="3年", period_years=3, start_date=dt.date(2025, 4, 1),
                      expiry_date=dt.date(2028, 3, 31), disposition="廃棄")
    md = Metadata(document_type="議事録", title="第3回庁議", document_date=dt.date(2024, 5, 20))
    assert rematched_retention(three, md).expiry_date == dt.date(2035, 3, 31)  # schemas/retention.yaml
    # the municipality's own schedule (kiroku.toml [retention] schedule), as the pipeline reads it
    own = tmp_path / "retention.yaml"
    own.write_text(SCHEDULE_PATH.read_text(encoding="utf-8").replace("議事録: {period: 10年, disposition: 移管}",
                                                                     "議事録: {period: 30年, disposition: 移管}"),
                   encoding="utf-8")
    assert rematched_retention(three, md, schedule=str(own)).expiry_date == dt.date(2055, 3, 31)
    # a calendar-year 起算日 rule
    assert rematched_retention(three, md, start_rule="calendar").start_date == dt.date(2025, 1, 1)
    # a legal hold is not lifted by a correction; a 延長 beyond the new rule stays
    held = three.model_copy(update={"legal_hold": True})
    assert rematched_retention(held, md).legal_hold
    extended = three.model_copy(update={"expiry_date": dt.date(2040, 3, 31), "rule": "type:通知+extended"})
    kept = rematched_retention(extended, md)
    assert (kept.expiry_date, kept.rule, kept.period) == (dt.date(2040, 3, 31), "type:議事録+extended", "10年")
    permanent = three.model_copy(update={"period": "永年", "period_years": None, "expiry_date": None,
                                         "legal_hold": True, "rule": "type:通知+extended"})
    assert rematched_retention(permanent, md).period == "永年"
    # 議事録 → 辞令 (30年): longer than the extension, so the rule's own 満了日
    longer = rematched_retention(extended, md.model_copy(update={"document_type": "辞令"}))
    assert (longer.expiry_date, longer.rule) == (dt.date(2055, 3, 31), "type:辞令")
    # nothing to match on: left as it was
    assert rematched_retention(three, Metadata()) == three


# ------------------------------------------------------------------ times in Japan time, dates in both calendars


def test_history_and_record_times_are_shown_in_japan_time(web_env):
    # 2026-01-05 16:30 UTC is 2026-01-06 01:30 in Japan: another day, which a UTC display gets wrong
    at = dt.datetime(2026, 1, 5, 16, 30, tzinfo=dt.timezone.utc)
    rid = _store_retained(web_env, "jst", title="夜間受付の通知", doc_type="通知", day=dt.date(2025, 12, 1),
                          text="夜間受付", events_at=at)
    page = client_for(web_env, "viewer").get(f"/records/{rid}")
    history = page.text[page.text.index("<h2>履歴</h2>"):]
    assert "令和8年1月6日（2026-01-06） 01:30" in history and 'datetime="2026-01-06T01:30:00+09:00"' in history
    assert "2026-01-05" not in history and "16:30" not in history
    assert "日時は日本時間です" in history
    assert "受付日時" in page.text and "保管日時" in page.text
    stored = web_env.catalog.get(rid)
    assert stored.events[0].at == at  # stored UTC, unchanged


def test_audit_log_page_filter_and_csv_are_in_japan_time(web_env):
    from sqlalchemy import insert

    from processors.archive.audit import audit_table

    with web_env.catalog.engine.begin() as conn:  # stored as the log stores it: naive UTC
        conn.execute(insert(audit_table).values(at=dt.datetime(2026, 1, 5, 16, 30, 5), user="jst-clerk",
                                                action="view", record_id="r1"))
    auditor = client_for(web_env, "auditor")
    page = auditor.get("/audit", params={"user": "jst-clerk"})
    assert "日時（日本時間）" in page.text and "令和8年1月6日（2026-01-06） 01:30:05" in page.text
    # a day typed by the auditor is a Japanese day: the entry is on 1月6日, not on 1月5日 (its UTC date)
    assert "jst-clerk" in auditor.get("/audit", params={"user": "jst-clerk", "since": "R8.1.6", "until": "R8.1.6"}).text
    assert "01:30:05" not in auditor.get("/audit", params={"user": "jst-clerk", "since": "2026-01-05",
                                                            "until": "2026-01-05"}).text
    exported = auditor.get("/audit.csv", params={"user": "jst-clerk"})
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[1][:3] == ["2026-01-06 01:30:05", "令和8年1月6日", "jst-clerk"]


def test_search_csv_and_register_show_era_dates(web_env):
    viewer = client_for(web_env, "viewer")
    rows = list(csv.reader(io.StringIO(viewer.get("/search.csv", params={"q": "減量"}).content.decode("utf-8-sig"))))
    header, row = rows[0], rows[1]
    assert row[header.index("文書日付")] == "2019-06-01" and row[header.index("文書日付(和暦)")] == "令和元年6月1日"
    assert row[header.index("満了日")] == "2025-03-31" and row[header.index("満了日(和暦)")] == "令和7年3月31日"
    page = client_for(web_env, "manager").get("/manage/register", params={"fiscal_year": "2019"})
    assert "令和7年3月31日<br><small>2025-03-31</small>" in page.text and "2019年度（令和元年度）" in page.text


# ------------------------------------------------------------------ 検索結果に戻る survives a correction


def test_the_search_it_came_from_survives_a_correction(web_env):
    rid = web_env.ids["due"]
    manager = client_for(web_env, "manager")
    came_from = "/search?q=%E6%B8%9B%E9%87%8F&fiscal_year=2019&sort=date_asc"
    page = manager.get(f"/records/{rid}", headers={"referer": f"http://testserver{came_from}"})
    escaped = came_from.replace("&", "&amp;")
    assert f'name="back" value="{escaped}"' in page.text  # every form carries it
    response = manager.post(f"/records/{rid}/correct", data={
        "csrf_token": csrf_of(page.text), "back": came_from, "addressee": "各課長", "reason": "宛先の補記"},
        follow_redirects=False)
    assert response.status_code == 303 and "back=" in response.headers["location"]
    after = manager.get(response.headers["location"])  # the browser's Referer is now the record page
    assert "修正を保存しました" in after.text and f'href="{escaped}">← 検索結果に戻る' in after.text
    failed = manager.post(f"/records/{rid}/correct", data={"csrf_token": csrf_of(page.text), "back": came_from,
                                                           "addressee": "各課長", "reason": "同じ"})
    assert "変更された項目がありません" in failed.text and f'href="{escaped}">← 検索結果に戻る' in failed.text
    # only this app's /search is carried: anything else falls back to an empty search
    forged = manager.get(f"/records/{rid}", params={"back": "https://evil.example/search?q=x"})
    assert 'href="/search">← 検索結果に戻る' in forged.text
    assert 'href="/search">← 検索結果に戻る' in manager.get(f"/records/{rid}", params={"back": "/audit"}).text


# ------------------------------------------------------------------ pagination, sorting, facets, saved searches


def test_pagination_links_page_through_every_result(web_env):
    viewer = client_for(web_env, "viewer")
    first = viewer.get("/search", params={"q": "ごみ", "per_page": "1", "sort": "date_asc"})
    assert total(first.text) == 2 and 'aria-current="page">1<' in first.text
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1).replace("&amp;", "&")
    assert "page=2" in next_url and "per_page=1" in next_url and "sort=date_asc" in next_url
    second = viewer.get(next_url)
    found = [re.search(r'<h3><a href="/records/([^"]+)">', p.text).group(1) for p in (first, second)]
    assert found == [web_env.ids["due"], web_env.ids["open"]]  # date_asc kept across pages
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    assert viewer.get("/search", params={"q": "ごみ", "per_page": "0"}).status_code == 400


def test_facet_counts_match_the_results_and_an_active_facet_can_be_taken_off(web_env):
    viewer = client_for(web_env, "viewer")
    page = viewer.get("/search", params={"q": "ごみ"})
    facets = dict(re.findall(r'>([^<>]+)</a> <span class="count">(\d+)件</span>', page.text))
    assert facets["契約書"] == "1" and facets["通知"] == "1" and facets["2024年度（令和6年度）"] == "1"
    link = re.search(r'<a href="([^"]+)" >通知</a>', page.text).group(1).replace("&amp;", "&")
    narrowed = viewer.get(link)
    assert total(narrowed.text) == 1 and web_env.ids["due"] in narrowed.text
    off = re.search(r'<a href="([^"]+)" aria-current="true"', narrowed.text).group(1).replace("&amp;", "&")
    assert "type=" not in off and "q=" in off and total(viewer.get(off).text) == 2


def test_sort_links_keep_the_query(web_env):
    viewer = client_for(web_env, "viewer")
    page = viewer.get("/search", params={"q": "ごみ", "fiscal_year": ""})
    links = dict((label, url) for url, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', page.text)
                 if "sort=" in url)
    assert set(links) == {"日付の新しい順", "日付の古い順", "文書番号順"}
    assert all("q=%E3%81%94%E3%81%BF" in url and "fiscal_year" not in url for url in links.values())


def test_sort_by_document_number_is_numeric(web_env):
    viewer = client_for(web_env, "viewer")
    hits = viewer.get("/api/search", params={"q": "ごみ", "sort": "number"}).json()["results"]
    numbers = [h["document_number"] for h in hits]
    assert numbers == sorted(numbers, key=lambda n: int(re.sub(r"\D", "", n))), numbers


def test_saved_search_runs_again_and_deleting_it_keeps_the_results(web_env):
    viewer = client_for(web_env, "viewer")
    page = viewer.get("/search", params={"q": "減量", "fiscal_year": "2019"})
    query = re.search(r'name="query" value="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    saved = viewer.post("/saved", data={"csrf_token": csrf_of(page.text), "name": "減量の通知", "query": query})
    assert total(saved.text) == 1 and "減量の通知" in saved.text
    link = re.search(r'<a href="(/search\?[^"]+)">減量の通知</a>', saved.text).group(1).replace("&amp;", "&")
    assert total(viewer.get(link).text) == 1
    search_id = re.search(r'action="/saved/(\d+)/delete"', saved.text.split("減量の通知")[1]).group(1)
    gone = viewer.post(f"/saved/{search_id}/delete", data={"csrf_token": csrf_of(saved.text), "query": query})
    assert "減量の通知" not in gone.text and total(gone.text) == 1  # still on the same results
