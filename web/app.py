"""The archivists' web app: search, record pages, corrections and records management.

Server-rendered (FastAPI + Jinja2, no JavaScript build): it runs on an office PC's
browser as it is, works with the keyboard alone and needs nothing downloaded.

Everything it knows comes from the same functions the CLI uses: the catalog and its
faceted search (processors.archive.query), storage with verified reads
(processors.archive.archiving.fetch_verified), the 文書管理者's actions
(processors.archive.stewardship), users and the audit log (processors.archive.users,
audit). The rules it enforces on every request:

- a session (HttpOnly, SameSite=Strict cookie; only the token's hash is stored) or, for
  /api/, a bearer token; everything else is redirected to /login;
- clearance: a record above the user's clearance is answered exactly like a record that
  does not exist (404), wherever it is asked for;
- a CSRF token on every form; failed logins are counted in the audit log and refused
  after LOGIN_LIMIT in LOGIN_WINDOW_MINUTES;
- every search, view and download is written to the audit log before it is answered.
"""

from __future__ import annotations

import datetime as dt
import csv
import hmac
import io
import logging
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import unicodedata
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from kiroku.config import Settings
from processors.archive import query as q
from processors.archive.audit import ACTIONS, AuditLog, in_jst
from processors.archive.catalog import REGISTER_COLUMNS, Catalog, _csv_cell
from processors.archive.stewardship import CORRECTABLE, StewardshipError, today_in_japan
from processors.archive.storage import StorageError
from processors.archive.users import User, UserError, Users
from processors.records.dates import parse_fiscal_year, parse_kanji_number, to_wareki
from schemas.record import Record

SESSION_COOKIE = "kiroku_session"
CSRF_COOKIE = "kiroku_csrf"
LOGIN_LIMIT = 5
LOGIN_WINDOW_MINUTES = 10
HERE = Path(__file__).resolve().parent

EVENT_LABELS = {
    "received": "受付", "read": "読取り（OCR）", "stored": "保管", "catalogued": "目録登録", "verified": "検証",
    "retention_extended": "保存期間延長", "legal_hold": "リーガルホールド", "corrected": "修正",
    "disposition_approved": "廃棄・移管承認", "transferred": "移管", "disposed": "廃棄", "rejected": "受付拒否",
}
PII_LABELS = {"my_number": "個人番号", "phone": "電話番号", "birth_date": "生年月日", "address": "住所",
              "person_name": "氏名"}
NOT_FOUND = "記録が見つかりません。IDが正しいか、閲覧できる記録かをご確認ください。"
PII_WITHHELD = ("この記録には個人番号が含まれているため、PDF・原本（スキャン）・縮小画像は個人番号を取り扱える"
                "利用者（取扱資格 3A）だけが開けます。書誌情報と読み取った文字（個人番号は伏せ字）はこの画面で"
                "確認できます。画像が必要な場合は、取扱資格 3A の職員に依頼してください。")


log = logging.getLogger("kiroku.web")


def has_my_number(record: Record) -> bool:
    """A 個人番号 in the record: found by the reader (record.pii) or anywhere in its text."""
    return any(p.type == "my_number" for p in record.pii) or q.mask_my_numbers(record.text) != record.text


class Refused(Exception):
    """An expected refusal, shown as a plain Japanese page with this status."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def wareki(day: dt.date | None) -> str:
    """令和7年4月1日（2025-04-01）: both calendars, as a records officer reads a date."""
    if day is None:
        return "—"
    try:
        return f"{to_wareki(day)}（{day.isoformat()}）"
    except ValueError:
        return day.isoformat()


def wareki_text(value: object) -> str:
    """wareki() of a date given as a date or as ISO text (register rows carry ISO strings)."""
    if isinstance(value, dt.date):
        return wareki(value)
    try:
        return wareki(dt.date.fromisoformat(str(value))) if value else "—"
    except ValueError:
        return str(value)


QUERY_LABELS = {
    "q": "キーワード", "type": "文書種別", "fiscal_year": "年度", "date_from": "日付（から）", "date_to": "日付（まで）",
    "department": "部署", "issuer": "発信者", "addressee": "宛先", "number": "文書番号", "amount_min": "金額（以上）",
    "amount_max": "金額（以下）", "counterparty": "相手方", "retention_period": "保存期間",
    "expiry_from": "満了日（から）", "expiry_to": "満了日（まで）", "disposition": "移管/廃棄", "classification": "機密性",
    "sort": "並び順", "page": "ページ", "per_page": "表示件数", "limit": "件数", "user": "利用者", "action": "操作",
    "record_id": "記録ID", "since": "期間（から）", "until": "期間（まで）",
}
QUERY_ACTIONS = ("search", "api_search", "export_csv", "audit_view", "audit_export")


def readable_detail(action: str, detail: str | None) -> str:
    """An audit entry's detail as an auditor reads it: a logged search `q=委託&sort=date_desc`
    becomes `キーワード「委託」 並び順「日付の新しい順」`. The log keeps the query as it was asked
    (and the CSV export gives it so); this is only how the page shows it."""
    if not detail or action not in QUERY_ACTIONS:
        return detail or ""
    head, sep, query = detail.rpartition(": ") if action == "export_csv" else ("", "", detail)
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=False)
    if not pairs or any(k not in QUERY_LABELS for k, _ in pairs):
        return detail
    shown = []
    for key, value in pairs:
        if key == "sort":
            value = q.SORTS.get(value, value)
        elif key == "action":
            value = ACTIONS.get(value, value)
        shown.append(f"{QUERY_LABELS[key]}「{value}」")
    return (f"{head}{sep}" if head else "") + " ".join(shown)


_ISO_DAY = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")


def with_era_dates(text: str | None) -> str:
    """Every ISO date in a history entry shown as 令和7年4月1日（2025-04-01）; the stored text keeps ISO."""
    def one(match: re.Match[str]) -> str:
        try:
            return wareki(dt.date(int(match[1]), int(match[2]), int(match[3])))
        except ValueError:
            return match[0]

    return _ISO_DAY.sub(one, text or "")


def wareki_plain(day: dt.date) -> str:
    """令和7年4月1日 alone (form fields: the correction form accepts it back as typed)."""
    try:
        return to_wareki(day)
    except ValueError:
        return day.isoformat()


def _era(day: dt.date | None) -> str | None:
    """令和7年4月1日, or None (no date, or before the Gregorian calendar in Japan)."""
    try:
        return to_wareki(day) if day else None
    except ValueError:
        return None


def jst_time(moment: dt.datetime | None, *, seconds: bool = False) -> str:
    """A stored instant (UTC) as people in Japan read it: 令和8年12月3日（2026-12-03）18:17 JST.

    Stored times stay UTC everywhere (catalog, audit log, record.json); they become
    Japan time only here, at the moment they are shown. A naive datetime is UTC (the
    audit log stores them so)."""
    if moment is None:
        return "—"
    local = in_jst(moment)
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    return f"{wareki(local.date())} {clock}"


def jst_iso(moment: dt.datetime) -> str:
    """The instant in JST as ISO 8601 with its +09:00 offset (for <time datetime>)."""
    return in_jst(moment).isoformat(timespec="seconds")


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = unicodedata.normalize("NFKC", value).strip()
    return value or None


def _int_input(value: str | None, label: str) -> int | None:
    """1,000,000 / １００万 / 100万円 as an integer (Japanese error otherwise)."""
    text = _clean(value)
    if text is None:
        return None
    text = text.replace(",", "").replace("円", "").replace(" ", "")
    factor = 1
    if text.endswith("万"):
        text, factor = text[:-1], 10_000
    elif text.endswith("億"):
        text, factor = text[:-1], 100_000_000
    number = int(text) if text.isdigit() else parse_kanji_number(text)
    if number is None:
        raise q.QueryError(f"{label}「{value}」を数として読めません。例: 1000000、100万")
    return number * factor


def _year_input(value: str | None) -> int | None:
    text = _clean(value)
    if text is None:
        return None
    if text.isdigit() and len(text) == 4:
        return int(text)
    year = parse_fiscal_year(text if text.endswith("年度") else text + "年度")
    if year is None:
        raise q.QueryError(f"年度「{value}」を読めません。例: 2025、令和7年度、R7")
    return year


PAGE_SIZES = (20, 50, 100)


def page_size(params: Any) -> int:
    """Results per page: ?per_page= (1 to 100; the form offers PAGE_SIZES), default 20."""
    text = _clean(params.get("per_page")) or "20"
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise q.QueryError("表示件数は1〜100の数で指定してください。")
    return int(text)


def era_year(year: object) -> str:
    """2024 → 2024年度（令和6年度）: a fiscal year in both calendars (facets, 管理簿).

    Named by the era in effect on 1 May of the year: 2019 is 令和元年度 as it is called
    today, 1988 stays 昭和63年度 and 1989 is 平成元年度."""
    try:
        y = int(str(year))
        era = to_wareki(dt.date(y, 5, 1))
    except ValueError:
        return f"{year}年度"
    return f"{y}年度（{era[:era.index('年') + 1]}度）"


def search_query(params: Any, *, per_page: int = 20) -> q.SearchQuery:
    """The SearchQuery of a form submission or URL (raises QueryError in Japanese)."""
    get = params.get
    page_text = _clean(get("page")) or "1"
    if not page_text.isdigit():
        raise q.QueryError("ページ番号が正しくありません。")
    return q.SearchQuery(
        text=_clean(get("q")), document_type=_clean(get("type")), fiscal_year=_year_input(get("fiscal_year")),
        date_from=q.parse_date_input(get("date_from"), "日付（から）"),
        date_to=q.parse_date_input(get("date_to"), "日付（まで）"),
        department=_clean(get("department")), issuer=_clean(get("issuer")), addressee=_clean(get("addressee")),
        number=_clean(get("number")), amount_min=_int_input(get("amount_min"), "金額（以上）"),
        amount_max=_int_input(get("amount_max"), "金額（以下）"), counterparty=_clean(get("counterparty")),
        retention_period=_clean(get("retention_period")),
        expiry_from=q.parse_date_input(get("expiry_from"), "満了日（から）"),
        expiry_to=q.parse_date_input(get("expiry_to"), "満了日（まで）"),
        disposition=_clean(get("disposition")), classification=_clean(get("classification")),
        sort=_clean(get("sort")) or "relevance", page=int(page_text), per_page=per_page)


def _search_url(value: str | None) -> str | None:
    """`value` if it is a URL of this app's search page (path /search, no host), else None."""
    if not value:
        return None
    parts = urllib.parse.urlsplit(str(value))
    if parts.scheme or parts.netloc or parts.path != "/search":
        return None
    return "/search" + (f"?{parts.query}" if parts.query else "")


def search_back_url(request: Request) -> str:
    """The search results the user came from, else /search.

    Carried as `back` (a query parameter of the record page, a hidden field of each of
    its forms) so that it survives a correction, a hold or an extension: after a POST
    the browser's Referer is the record page itself. Without it, the same-origin
    Referer when it is /search. A real link, not history.back(): the
    Content-Security-Policy allows no inline script, and a link works with the keyboard
    and in a new tab."""
    carried = _search_url(request.query_params.get("back"))
    if carried:
        return carried
    referer = urllib.parse.urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path == "/search":
        return "/search" + (f"?{referer.query}" if referer.query else "")
    return "/search"


def retention_notice(old: Any, new: Any) -> str:
    """What a correction did to the retention, in a sentence for the message after saving."""
    if new is None or old == new:
        return ""
    text = f"保存期間を判定し直しました: {new.period}・{new.disposition}、満了日 {wareki(new.expiry_date)}。"
    if old is not None and old.expiry_date and new.expiry_date and new.expiry_date < old.expiry_date:
        text += "満了日は早まりましたが、保存庫のロックは短縮できないため、元の期限までロックされたままです。"
    return text


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _prepare_quietly(catalog: Catalog) -> None:
    try:
        q.prepare(catalog)
    except Exception:  # noqa: BLE001 - a warm-up; the first search builds the columns itself
        log.debug("search warm-up failed", exc_info=True)


def create_app(settings: Settings, *, store_factory: Callable[[], Any] | None = None,
               catalog: Catalog | None = None) -> FastAPI:
    """The app for these settings. `store_factory` builds the ArchiveStore (tests pass the
    session's SeaweedFS); by default the configured one, built when first needed."""
    from kiroku import wiring

    catalog = catalog or wiring.catalog(settings)
    # the in-memory search columns take 1-2.5 s to build at 100,000 records: build them now, in
    # the background, so the first archivist's search does not wait (a search meanwhile waits on its lock)
    threading.Thread(target=_prepare_quietly, args=(catalog,), daemon=True, name="kiroku-search-warm").start()
    users = Users(catalog.engine)
    audit = AuditLog(catalog.engine)
    thumbs_dir = settings.home / "thumbs"
    state: dict[str, Any] = {}

    def store() -> Any:
        if "store" not in state:
            state["store"] = store_factory() if store_factory else wiring.archive_store(settings)
        return state["store"]

    app = FastAPI(title="kiroku 記録", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(wareki=wareki, wareki_text=wareki_text, era_year=era_year, wareki_plain=wareki_plain,
                                 readable_detail=readable_detail, with_era_dates=with_era_dates, jst_time=jst_time, jst_iso=jst_iso, EVENT_LABELS=EVENT_LABELS, PII_LABELS=PII_LABELS,
                                 FACETS=q.FACETS, SORTS=q.SORTS, ACTIONS=ACTIONS, CORRECTABLE=CORRECTABLE)

    # ------------------------------------------------------------------ helpers

    def current(request: Request) -> tuple[User, str] | None:
        return users.session(request.cookies.get(SESSION_COOKIE))

    def require(request: Request, *, manage: bool = False, audit_role: bool = False) -> tuple[User, str]:
        found = current(request)
        if found is None:
            raise Refused(401, "ログインしてください。")
        user = found[0]
        if manage and not user.can_manage:
            raise Refused(403, "この操作は文書管理者だけが行えます。")
        if audit_role and not user.can_audit:
            raise Refused(403, "アクセス記録は管理者と監査者だけが閲覧できます。")
        return found

    def check_csrf(form: Any, expected: str | None) -> None:
        sent = form.get("csrf_token") or ""
        if not expected or not hmac.compare_digest(str(sent), expected):
            raise Refused(400, "画面の有効期限が切れました。ページを開き直してから、もう一度操作してください。",
                          "CSRF token missing or wrong")

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
               user: User | None = None, csrf: str | None = None) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"user": user, "csrf": csrf, **context},
                                          status_code=status)

    def record_for(request: Request, user: User, record_id: str, action: str) -> Record:
        record = q.visible_record(catalog, record_id, user.clearance)
        if record is None:
            exists = catalog.get(record_id) is not None
            audit.write("denied" if exists else action, user=user.name, record_id=record_id,
                        detail="取扱資格を超える記録" if exists else "存在しない記録", ip=_client_ip(request))
            raise Refused(404, NOT_FOUND)
        return record

    def masked(user: User) -> bool:
        return user.clearance != q.CLEARANCES[-1]

    def scans_withheld(user: User, record: Record) -> bool:
        """Whether this user may not have the record's scans (PDF/A, original, thumbnails).

        A 個人番号 in a scan is in its pixels, and in the PDF/A's text layer; a masked
        rendition would have to find every place it is printed or handwritten, and an
        OCR miss would hand the number out. So a user who is not cleared for 個人番号
        gets no scan of a record that has one: the download is refused in Japanese
        (PII_WITHHELD) and the record page says so; its metadata and OCR text are shown
        with the number masked.
        """
        return masked(user) and has_my_number(record)

    def refuse_scans(request: Request, user: User, record: Record, action: str) -> None:
        if scans_withheld(user, record):
            audit.write("denied", user=user.name, record_id=record.id, detail=f"{ACTIONS.get(action, action)}: 個人番号を含むため",
                        ip=_client_ip(request))
            raise Refused(403, PII_WITHHELD, "the record holds a My Number (個人番号); its scans are served "
                                             "only to users with clearance 3A")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message, "detail": exc.detail}, status_code=exc.status)
        if exc.status == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + urllib.parse.quote(target), status_code=303)
        found = current(request)
        return render(request, "error.html", {"message": exc.message, "detail": exc.detail}, exc.status,
                      *(found or (None, None)))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; "
                                    "object-src 'self'; form-action 'self'")
        if "cache-control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------------ login

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/search") -> Response:  # noqa: A002
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = render(request, "login.html", {"next": next, "login_csrf": token, "error": None})
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        target = str(form.get("next") or "/search")
        if not target.startswith("/") or target.startswith("//"):
            target = "/search"
        check_csrf(form, request.cookies.get(CSRF_COOKIE))
        ip = _client_ip(request)

        def again(message: str, status: int) -> Response:
            return render(request, "login.html", {"next": target, "login_csrf": request.cookies.get(CSRF_COOKIE),
                                                  "error": message, "username": name}, status)

        if audit.recent_failures(user=name, ip=ip, minutes=LOGIN_WINDOW_MINUTES) >= LOGIN_LIMIT:
            audit.write("login_failed", user=name, detail="試行回数の上限により拒否", ip=ip)
            return again(f"ログインに続けて失敗したため、しばらくログインできません。{LOGIN_WINDOW_MINUTES}分ほど"
                         "待ってからもう一度お試しください。", 429)
        user = users.authenticate(name, password)
        if user is None:
            audit.write("login_failed", user=name, ip=ip)
            return again("ユーザー名またはパスワードが違います。", 401)
        token, _csrf = users.new_session(user)
        audit.write("login", user=user.name, ip=ip)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/")
        response.delete_cookie(CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        user, csrf = require(request)
        check_csrf(await request.form(), csrf)
        users.end_session(request.cookies.get(SESSION_COOKIE))
        audit.write("logout", user=user.name, ip=_client_ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/search", status_code=303)

    # ------------------------------------------------------------------ search

    def run_search(request: Request, user: User) -> tuple[q.SearchQuery | None, q.SearchResult | None, str | None]:
        try:
            query = search_query(request.query_params, per_page=page_size(request.query_params))
            return query, q.search(catalog, query, user.clearance, mask=masked(user)), None
        except q.QueryError as exc:
            return None, None, str(exc)

    @app.get("/search", response_class=HTMLResponse)
    def search_page(request: Request) -> Response:
        user, csrf = require(request)
        params = request.query_params
        asked = any(params.get(k) for k in params.keys() if k not in ("sort", "page", "per_page"))
        query, result, error = run_search(request, user) if asked else (None, None, None)
        if asked:
            audit.write("search", user=user.name, detail=urllib.parse.unquote(str(request.url.query)),
                        ip=_client_ip(request))
        base = {k: v for k, v in params.items() if k != "page" and v != ""}

        def url(**changes: object) -> str:
            values = {**base, **{k: str(v) for k, v in changes.items() if v is not None}}
            for k in [k for k, v in changes.items() if v is None]:
                values.pop(k, None)
            return "/search?" + urllib.parse.urlencode(values)

        facet_links = {}
        if result:
            for name in q.FACETS:
                key = "type" if name == "document_type" else name
                links = []
                for value, count in result.facets.get(name, []):
                    active = _clean(params.get(key)) == _clean(str(value))
                    # an active value's link takes the filter off again (a toggle, like any shop's facets)
                    links.append((value, count, url(**{key: None if active else value}), active))
                facet_links[name] = links
        return render(request, "search.html", {
            "params": params, "result": result, "error": error, "facet_links": facet_links,
            "page_url": lambda n: url(page=n), "sort_url": lambda key: url(sort=key),
            "current_sort": _clean(params.get("sort")) or "relevance",
            "csv_url": "/search.csv?" + urllib.parse.urlencode(base), "page_sizes": PAGE_SIZES,
            "saved": users.saved_searches(user), "query_string": urllib.parse.urlencode(base),
        }, 400 if error else 200, user, csrf)

    @app.get("/search.csv")
    def search_csv(request: Request) -> Response:
        user, _ = require(request)
        rows: list[q.Hit] = []
        try:
            first = search_query(request.query_params, per_page=500)
            page = 1
            while True:
                result = q.search(catalog, q.SearchQuery(**{**first.__dict__, "page": page}), user.clearance,
                                  facets=False, mask=masked(user))
                rows.extend(result.hits)
                if page >= result.pages or len(rows) >= 10_000:
                    break
                page += 1
        except q.QueryError as exc:
            raise Refused(400, str(exc)) from exc
        audit.write("export_csv", user=user.name, detail=f"{len(rows)}件: " + urllib.parse.unquote(
            str(request.url.query)), ip=_client_ip(request))
        # ISO dates (Excel sorts them) with the era date beside each, as the officer reads it
        header = ["ID", "件名", "文書種別", "文書番号", "文書日付", "文書日付(和暦)", "年度", "部署", "発信者", "機密性", "保存期間",
                  "満了日", "満了日(和暦)", "移管/廃棄"]
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        for h in rows:
            writer.writerow([_csv_cell(v) for v in (h.record_id, h.title, h.document_type, h.document_number,
                                                    h.document_date, _era(h.document_date), h.fiscal_year,
                                                    h.department, h.issuer, h.classification, h.retention_period,
                                                    h.expiry_date, _era(h.expiry_date), h.disposition)])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=\"kiroku-search.csv\""})

    @app.post("/saved")
    async def save_search(request: Request) -> Response:
        user, csrf = require(request)
        form = await request.form()
        check_csrf(form, csrf)
        query_string = str(form.get("query") or "")
        try:
            users.save_search(user, str(form.get("name") or ""), query_string)
        except UserError as exc:
            raise Refused(400, str(exc)) from exc
        return RedirectResponse("/search?" + query_string, status_code=303)

    @app.post("/saved/{search_id}/delete")
    async def delete_search(request: Request, search_id: int) -> Response:
        user, csrf = require(request)
        form = await request.form()
        check_csrf(form, csrf)
        users.delete_search(user, search_id)
        query_string = str(form.get("query") or "")
        return RedirectResponse("/search" + (f"?{query_string}" if query_string else ""), status_code=303)

    @app.get("/api/search")
    def api_search(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        user = users.user_for_token(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        if user is None:
            found = current(request)
            user = found[0] if found else None
        if user is None:
            return JSONResponse({"error": "ログインするか、APIトークンを指定してください。"}, status_code=401)
        try:
            query = search_query(request.query_params, per_page=min(100, int(request.query_params.get("limit", 20))
                                                                      if str(request.query_params.get("limit", "20")).isdigit() else 20))
            result = q.search(catalog, query, user.clearance, mask=masked(user))
        except q.QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        audit.write("api_search", user=user.name, detail=urllib.parse.unquote(str(request.url.query)),
                    ip=_client_ip(request))
        return JSONResponse({
            "total": result.total, "page": result.page, "per_page": result.per_page,
            "results": [{
                "id": h.record_id, "title": h.title, "document_type": h.document_type,
                "document_number": h.document_number,
                "document_date": h.document_date.isoformat() if h.document_date else None,
                "fiscal_year": h.fiscal_year, "department": h.department, "issuer": h.issuer,
                "classification": h.classification, "retention_period": h.retention_period,
                "expiry_date": h.expiry_date.isoformat() if h.expiry_date else None, "disposition": h.disposition,
                "snippet": h.snippet_text, "url": f"/records/{h.record_id}",
            } for h in result.hits],
            "facets": {name: dict(values) for name, values in result.facets.items()},
        })

    # ------------------------------------------------------------------ records

    @app.get("/records/{record_id}", response_class=HTMLResponse)
    def record_page(request: Request, record_id: str) -> Response:
        user, csrf = require(request)
        record = record_for(request, user, record_id, "view")
        audit.write("view", user=user.name, record_id=record.id, ip=_client_ip(request))
        hide = masked(user)
        text = q.mask_my_numbers(record.text) if hide else record.text
        pii = [(PII_LABELS.get(p.type, p.type),
                re.sub(r"[0-9０-９]", "＊", p.value) if p.type == "my_number" and hide else p.value, p.page)
               for p in record.pii]
        from processors.archive.stewardship import disposition_decision

        return render(request, "record.html", {
            "record": record, "md": record.metadata, "ret": record.retention, "arc": record.archive,
            "text": text, "pii": pii, "pages": max(1, len(record.pages)), "masked": hide,
            "scans_withheld": scans_withheld(user, record), "pii_withheld": PII_WITHHELD,
            "decision": disposition_decision(record), "today": today_in_japan(),
            "message": request.query_params.get("done"), "error": request.query_params.get("error"),
            "back_url": search_back_url(request),
        }, 200, user, csrf)

    def verified_bytes(record: Record, *, original: bool) -> bytes:
        from processors.archive.archiving import fetch_verified
        from processors.archive.storage import IntegrityError as StoredIntegrityError
        from processors.archive.storage import StorageError

        if record.archive is None:
            raise Refused(404, "この記録はまだ保存庫に保管されていません。")
        try:
            return fetch_verified(store(), record, original=original)
        except StoredIntegrityError as exc:
            raise Refused(502, "保存庫のファイルが記録のチェックサムと一致しません。管理者に連絡してください。",
                          str(exc)) from exc
        except StorageError as exc:
            raise Refused(503, "保存庫（S3）に接続できません。しばらくしてからもう一度お試しください。", str(exc)) from exc
        except Exception as exc:  # boto3 endpoint errors and the like: storage not reachable
            raise Refused(503, "保存庫（S3）に接続できません。しばらくしてからもう一度お試しください。",
                          type(exc).__name__) from exc

    @app.get("/records/{record_id}/pdf")
    def record_pdf(request: Request, record_id: str) -> Response:
        user, _ = require(request)
        record = record_for(request, user, record_id, "download_pdf")
        refuse_scans(request, user, record, "download_pdf")
        data = verified_bytes(record, original=False)
        audit.write("download_pdf", user=user.name, record_id=record.id, ip=_client_ip(request))
        return Response(data, media_type="application/pdf", headers={
            "Content-Disposition": f"inline; filename=\"{record.id}.pdf\"",
            "X-Content-SHA256": record.archive.sha256 if record.archive else ""})

    @app.get("/records/{record_id}/original")
    def record_original(request: Request, record_id: str) -> Response:
        from processors.archive.archiving import CONTENT_TYPES, EXTENSIONS

        user, _ = require(request)
        record = record_for(request, user, record_id, "download_original")
        refuse_scans(request, user, record, "download_original")
        data = verified_bytes(record, original=True)
        audit.write("download_original", user=user.name, record_id=record.id, ip=_client_ip(request))
        ext = EXTENSIONS.get(record.source.format, "bin")
        quoted = urllib.parse.quote(record.source.filename)
        return Response(data, media_type=CONTENT_TYPES.get(record.source.format, "application/octet-stream"),
                        headers={"Content-Disposition": f"attachment; filename=\"{record.id}.{ext}\"; "
                                                        f"filename*=UTF-8''{quoted}",
                                 "X-Content-SHA256": record.source.sha256})

    @app.get("/records/{record_id}/thumbs/{page}.png")
    def record_thumb(request: Request, record_id: str, page: int) -> Response:
        user, _ = require(request)
        record = record_for(request, user, record_id, "thumbnail")
        refuse_scans(request, user, record, "thumbnail")
        if record.archive is None:
            raise Refused(404, "この記録はまだ保存庫に保管されていません。")
        folder = thumbs_dir / record.id / record.archive.sha256[:16]
        if not folder.is_dir():
            make_thumbnails(verified_bytes(record, original=False), folder)
        path = folder / f"{page}.png"
        if not path.is_file():
            raise Refused(404, "そのページはありません。")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    # ------------------------------------------------------------------ stewardship

    async def steward(request: Request, record_id: str) -> tuple[User, Record, Any]:
        user, csrf = require(request, manage=True)
        form = await request.form()
        check_csrf(form, csrf)
        return user, record_for(request, user, record_id, "view"), form

    def back(record_id: str, form: Any, *, done: str | None = None, error: str | None = None) -> Response:
        """Back to the record page with the outcome, still knowing the search it came from."""
        came_from = _search_url(str(form.get("back") or ""))
        query = urllib.parse.urlencode({k: v for k, v in (("done", done), ("error", error), ("back", came_from))
                                        if v})
        return RedirectResponse(f"/records/{record_id}?{query}", status_code=303)

    @app.post("/records/{record_id}/correct")
    async def correct(request: Request, record_id: str) -> Response:
        from processors.archive.stewardship import correct_record

        user, record, form = await steward(request, record_id)
        try:
            changes: dict[str, object] = {}
            for name in CORRECTABLE:
                if name not in form:
                    continue
                raw = str(form.get(name) or "")
                if name == "document_date":
                    changes[name] = q.parse_date_input(raw, "文書日付")
                elif name == "amount":
                    changes[name] = _int_input(raw, "金額")
                elif name == "fiscal_year":
                    changes[name] = _year_input(raw)
                else:
                    changes[name] = raw
            if "fiscal_year" in changes and changes["fiscal_year"] == record.metadata.fiscal_year:
                del changes["fiscal_year"]  # let a corrected date move the 年度
            corrected = correct_record(store(), catalog, record, changes, agent=user.name,
                                       reason=str(form.get("reason") or ""), start_rule=settings.retention_start_rule,
                                       schedule=settings.retention_schedule)
        except (q.QueryError, StewardshipError) as exc:
            return back(record.id, form, error=str(exc))
        except StorageError as exc:
            return back(record.id, form, error=f"保存庫が修正を受け付けませんでした。しばらくしてからもう一度お試しください。（{exc}）")
        audit.write("correct", user=user.name, record_id=record.id, detail=str(form.get("reason") or ""),
                    ip=_client_ip(request))
        return back(record.id, form, done="修正を保存しました（新しい版として保管されました）。"
                    + retention_notice(record.retention, corrected.retention))

    @app.post("/records/{record_id}/hold")
    async def hold(request: Request, record_id: str) -> Response:
        from processors.archive.stewardship import set_legal_hold

        user, record, form = await steward(request, record_id)
        on = form.get("on") == "1"
        try:
            set_legal_hold(store(), catalog, record, on, agent=user.name, reason=str(form.get("reason") or ""))
        except StewardshipError as exc:
            return back(record.id, form, error=str(exc))
        audit.write("legal_hold", user=user.name, record_id=record.id, detail=("設定" if on else "解除"),
                    ip=_client_ip(request))
        return back(record.id, form, done="リーガルホールドを" + ("設定" if on else "解除") + "しました。")

    @app.post("/records/{record_id}/extend")
    async def extend_retention(request: Request, record_id: str) -> Response:
        from processors.archive.stewardship import extend

        user, record, form = await steward(request, record_id)
        try:
            period = _clean(str(form.get("period") or ""))
            until = q.parse_date_input(str(form.get("until") or ""), "新しい満了日")
            extend(store(), catalog, record, period=period, until=until, agent=user.name,
                   reason=str(form.get("reason") or ""))
        except (q.QueryError, StewardshipError) as exc:
            return back(record.id, form, error=str(exc))
        except Exception as exc:  # the server refusing to move a lock: say so plainly
            from processors.archive.storage import StorageError

            if isinstance(exc, StorageError):
                return back(record.id, form, error=f"保存庫が延長を受け付けませんでした: {exc}")
            raise
        audit.write("extend", user=user.name, record_id=record.id, ip=_client_ip(request))
        return back(record.id, form, done="保存期間を延長しました。")

    @app.post("/records/{record_id}/approve")
    async def approve(request: Request, record_id: str) -> Response:
        from processors.archive.stewardship import approve_disposition

        user, record, form = await steward(request, record_id)
        try:
            approve_disposition(store(), catalog, record, agent=user.name, reason=str(form.get("reason") or ""))
        except StewardshipError as exc:
            if form.get("from") == "queue":
                return RedirectResponse("/manage/disposition?" + urllib.parse.urlencode({"error": str(exc)}),
                                        status_code=303)
            return back(record.id, form, error=str(exc))
        audit.write("approve_disposition", user=user.name, record_id=record.id,
                    detail=str(form.get("reason") or ""), ip=_client_ip(request))
        if form.get("from") == "queue":
            return RedirectResponse("/manage/disposition?done=" + urllib.parse.quote(f"{record.id} を承認しました。"),
                                    status_code=303)
        return back(record.id, form, done="廃棄・移管を承認しました（保存庫からは何も削除していません）。")

    # ------------------------------------------------------------------ records management

    def register_rows(user: User, year: int | None) -> list[dict[str, object]]:
        return catalog.register_rows(year, where=[q.clearance_condition(user.clearance)])

    @app.get("/manage/register", response_class=HTMLResponse)
    def register_page(request: Request) -> Response:
        user, csrf = require(request, manage=True)
        try:
            year = _year_input(request.query_params.get("fiscal_year"))
        except q.QueryError as exc:
            raise Refused(400, str(exc)) from exc
        rows = register_rows(user, year) if year is not None else []
        years = [int(v) for v, _ in q.search(catalog, q.SearchQuery(per_page=1), user.clearance).facets["fiscal_year"]]
        audit.write("register", user=user.name, detail=f"{year}年度" if year else "年度一覧", ip=_client_ip(request))
        return render(request, "register.html", {"rows": rows, "year": year, "years": years,
                                                 "columns": REGISTER_COLUMNS}, 200, user, csrf)

    @app.get("/manage/register.csv")
    def register_csv(request: Request) -> Response:
        from processors.archive.catalog import write_register_csv

        user, _ = require(request, manage=True)
        try:
            year = _year_input(request.query_params.get("fiscal_year"))
        except q.QueryError as exc:
            raise Refused(400, str(exc)) from exc
        rows = register_rows(user, year)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "register.csv"
            write_register_csv(rows, path)  # the same file `kiroku register export` writes
            data = path.read_bytes()
        audit.write("register", user=user.name, detail=f"CSV {year or '全'}年度 {len(rows)}件", ip=_client_ip(request))
        name = f"gyosei-bunsho-file-kanribo-{year or 'all'}.csv"
        return Response(data, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename=\"{name}\""})

    @app.get("/manage/disposition", response_class=HTMLResponse)
    def disposition_page(request: Request) -> Response:
        from processors.archive.stewardship import disposition_decision

        user, csrf = require(request, manage=True)
        try:
            on = q.parse_date_input(request.query_params.get("on"), "基準日") or today_in_japan()
        except q.QueryError as exc:
            raise Refused(400, str(exc)) from exc
        due = catalog.due_for_disposition(on, where=[q.clearance_condition(user.clearance)])
        groups: dict[str, list[tuple[Record, str | None]]] = {"移管": [], "廃棄": []}
        for record in due:
            groups.setdefault(record.retention.disposition, []).append((record, disposition_decision(record)))
        return render(request, "disposition.html", {
            "groups": groups, "on": on, "message": request.query_params.get("done"),
            "error": request.query_params.get("error")}, 200, user, csrf)

    # ------------------------------------------------------------------ audit

    def audit_entries(request: Request) -> list[Any]:
        p = request.query_params
        try:
            since = q.parse_date_input(p.get("since"), "期間（から）")
            until = q.parse_date_input(p.get("until"), "期間（まで）")
        except q.QueryError as exc:
            raise Refused(400, str(exc)) from exc
        return audit.entries(user=_clean(p.get("user")), action=_clean(p.get("action")),
                             record_id=_clean(p.get("record_id")), since=since, until=until,
                             limit=500 if request.url.path == "/audit" else 100_000)

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> Response:
        user, csrf = require(request, audit_role=True)
        entries = audit_entries(request)
        audit.write("audit_view", user=user.name, detail=urllib.parse.unquote(str(request.url.query)),
                    ip=_client_ip(request))
        return render(request, "audit.html", {"entries": entries, "params": request.query_params,
                                              "csv_url": "/audit.csv?" + str(request.url.query)}, 200, user, csrf)

    @app.get("/audit.csv")
    def audit_csv(request: Request) -> Response:
        user, _ = require(request, audit_role=True)
        entries = audit_entries(request)
        audit.write("audit_export", user=user.name, detail=f"{len(entries)}件", ip=_client_ip(request))
        return Response(AuditLog.csv_text(entries), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=\"kiroku-audit.csv\""})

    return app


def make_thumbnails(pdf: bytes, folder: Path, *, dpi: int = 36) -> None:
    """PNG thumbnails of every page, once: rendered by poppler's pdftoppm into a temporary
    folder and moved into place whole, so a half-made set is never served."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".thumbs-"))
    try:
        (work / "in.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), str(work / "in.pdf"), str(work / "p")], check=True,
                       capture_output=True, timeout=120)
        (work / "in.pdf").unlink()
        for n, path in enumerate(sorted(work.glob("p-*.png"), key=lambda p: int(p.stem.split("-")[-1])), start=1):
            path.rename(work / f"{n}.png")
        try:
            work.rename(folder)
        except OSError:  # made meanwhile by another request
            pass
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
