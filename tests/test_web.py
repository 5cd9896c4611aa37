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
    assert "download_pdf: 個人番号を含むため" in denied and "thumbnail: 個人番号を含むため" in denied


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
    for label in ("検索", "閲覧", "PDF取得", "原本取得", "拒否", "監査テスト語"):
        assert label in page.text, label
    exported = auditor.get("/audit.csv", params={"user": "viewer"})
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0] == ["日時(UTC)", "利用者", "操作", "記録ID", "内容", "接続元"]
    actions = {row[2] for row in rows[1:]}
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
