"""A small archive for the web app's tests: real SeaweedFS objects, a SQLite catalog, four users.

Records (ids are unique per run: locked objects can never be removed from the shared bucket):
- open:    機密性2 ごみ収集業務委託契約書, 令和6年度, stored with a two-page PDF and a PNG scan;
- secret:  機密性3A 契約 record with a 個人番号 (only the 3A user may see it at all);
- pii3b:   機密性3B 申請書 with a 個人番号 in its text (seen by 3B users, number masked);
- due:     機密性2 通知 whose 満了日 has passed (the disposition queue).
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

__all__ = ["WebEnv", "web_env", "login", "PASSWORD", "MY_NUMBER"]

PASSWORD = "correct-horse-battery"
MY_NUMBER = "1234 5678 9018"  # valid check digit


@dataclass
class WebEnv:
    settings: Any
    catalog: Any
    store_factory: Any
    ids: dict[str, str]
    originals: dict[str, bytes]
    pdfs: dict[str, bytes]
    home: Path

    def app(self) -> Any:
        from web.app import create_app

        return create_app(self.settings, store_factory=self.store_factory, catalog=self.catalog)


def _page_png(text: str) -> bytes:
    image = Image.new("L", (400, 560), 255)
    ImageDraw.Draw(image).rectangle((40, 40, 360, 120), outline=0, width=4)
    ImageDraw.Draw(image).text((50, 60), text, fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _pdf(pages: int, label: str) -> bytes:
    images = [Image.new("RGB", (300, 420), "white") for _ in range(pages)]
    for n, image in enumerate(images):
        ImageDraw.Draw(image).text((30, 30), f"{label} page {n + 1}", fill="black")
    out = io.BytesIO()
    images[0].save(out, format="PDF", save_all=True, append_images=images[1:], resolution=72)
    return out.getvalue()


def _record(rid: str, original: bytes, *, title: str, text: str, doc_type: str, classification: str,
            day: dt.date, expiry: dt.date, disposition: str = "廃棄", department: str = "環境保全課",
            pii: list[Any] | None = None, pages: int = 1) -> Any:
    import hashlib

    from processors.records.dates import fiscal_year
    from schemas.record import Event, Metadata, Page, Record, Retention, Source

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return Record(
        id=rid,
        source=Source(filename=f"{title}.png", sha256=hashlib.sha256(original).hexdigest(), bytes=len(original),
                      format="png", department=department, received_at=now),
        pages=[Page(index=i, text=text, dpi=300, width_px=2480, height_px=3508) for i in range(pages)],
        text=text,
        metadata=Metadata(document_type=doc_type, title=title, document_number=f"環第{len(rid) * 7}号",
                          document_date=day, issuer="新潟市長", addressee="株式会社日本海建設",
                          fiscal_year=fiscal_year(day), amount=1_200_000 if doc_type == "契約書" else None,
                          counterparty="株式会社日本海建設" if doc_type == "契約書" else None),
        pii=pii or [],
        classification=classification,
        retention=Retention(rule=f"type:{doc_type}", period="5年", period_years=5, start_date=dt.date(
            expiry.year - 5, 4, 1), expiry_date=expiry, disposition=disposition),  # type: ignore[arg-type]
        events=[Event(type="received", at=now, agent="kiroku test"), Event(type="stored", at=now, agent="kiroku test")],
    )


@pytest.fixture(scope="module")
def web_env(seaweed, seaweed_bucket, tmp_path_factory) -> Iterator[WebEnv]:
    from kiroku.config import load_settings
    from processors.archive.archiving import store_record
    from processors.archive.catalog import Catalog
    from processors.archive.users import Users
    from schemas.record import PersonalData

    home = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{home / 'catalog.db'}"
    settings = load_settings(home=home, inbox=home / "inbox", catalog_url=url)
    catalog = Catalog(url)

    def store_factory() -> Any:
        return seaweed.store(seaweed_bucket)

    run = uuid.uuid4().hex[:8]
    ids = {name: f"web{run}{name}" for name in ("open", "secret", "pii3b", "due")}
    future = dt.date.today() + dt.timedelta(days=400)
    specs = {
        "open": dict(title="ごみ収集業務委託契約書", doc_type="契約書", classification="機密性2", day=dt.date(2024, 5, 20),
                     expiry=future, pages=2,
                     text="業務委託契約書\n令和6年5月20日\n家庭ゴミ収集運搬業務を委託する。單位は月額とする。\n契約金額 金1,200,000円"),
        "secret": dict(title="特定個人情報の取扱い契約", doc_type="契約書", classification="機密性3A", day=dt.date(2024, 6, 3),
                       expiry=future, text=f"秘密の契約\n個人番号 {MY_NUMBER}\n極秘事項あり",
                       pii=[PersonalData(type="my_number", value=MY_NUMBER)]),
        "pii3b": dict(title="児童手当認定請求書", doc_type="申請書", classification="機密性3B", day=dt.date(2023, 7, 1),
                      expiry=future, department="子育て支援課", text=f"児童手当の申請\n請求者の個人番号 {MY_NUMBER}\n電話 025-123-4567",
                      pii=[PersonalData(type="my_number", value=MY_NUMBER)]),
        "due": dict(title="令和元年度ごみ減量推進について（通知）", doc_type="通知", classification="機密性2",
                    day=dt.date(2019, 6, 1), expiry=dt.date(2025, 3, 31), disposition="移管",
                    text="ごみ減量推進の通知\n令和元年6月1日"),
    }
    store = store_factory()
    originals, pdfs = {}, {}
    for name, spec in specs.items():
        rid = ids[name]
        original = _page_png(f"{name} {run}")
        pdf = _pdf(spec.get("pages", 1), f"{name} {run}")
        record = _record(rid, original, **spec)  # type: ignore[arg-type]
        (home / f"{rid}.png").write_bytes(original)
        (home / f"{rid}.pdf").write_bytes(pdf)
        catalog.add(store_record(store, record, home / f"{rid}.pdf", home / f"{rid}.png"))
        originals[name], pdfs[name] = original, pdf
    users = Users(catalog.engine)
    for name, role, clearance in (("viewer", "閲覧者", "2"), ("manager", "文書管理者", "3B"), ("admin", "管理者", "3A"),
                                  ("auditor", "監査者", "2")):
        users.add(name, PASSWORD, role=role, clearance=clearance)
    yield WebEnv(settings, catalog, store_factory, ids, originals, pdfs, home)
    catalog.close()


def login(client: Any, name: str, password: str = PASSWORD) -> Any:
    """Log in through the form like a browser: GET /login for the CSRF cookie, POST the form."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token},
                       follow_redirects=False)
