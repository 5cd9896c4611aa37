"""The one record that flows through every stage of kiroku.

A stage takes a Record (or one of its Pages) and returns a new one; nothing else
travels between stages. `process` writes it as <stem>.json and `store` keeps it as
record.json beside the archived PDF/A, so its shape is a public contract: the
exported JSON Schema (schemas/record.schema.json) is regenerated from this module
by `python -m schemas.record` and checked by the tests.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WritingMode = Literal["horizontal", "vertical"]
Disposition = Literal["移管", "廃棄"]
SCHEMA_PATH = Path(__file__).with_name("record.schema.json")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


EventType = Literal["received", "read", "stored", "catalogued", "verified", "retention_extended", "legal_hold",
                    "corrected", "disposition_approved", "transferred", "disposed", "rejected"]
IntegrityMode = Literal["object-lock", "tamper-evident"]


class Source(_Model):
    """Where the scan came from, as it was received (kept bit for bit in the archive)."""

    filename: str = Field(description="the file name as a person reads it (NFC; a Shift_JIS name decoded)")
    filename_bytes: str | None = Field(
        default=None, description="base64 of the name's bytes on disk, when they are not the UTF-8 of filename")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    format: str = Field(description="png, jpeg, tiff or pdf")
    department: str | None = Field(default=None, description="the inbox sub-folder it was dropped in, e.g. 総務課")
    received_at: dt.datetime


class Word(_Model):
    """A recognised word (for Japanese usually a run of characters) on the prepared page."""

    text: str
    bbox: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 in pixels of the upright, deskewed page")
    confidence: float = Field(ge=0, le=100)


class Line(_Model):
    """A visual line (a column on vertical pages) in reading order."""

    text: str
    bbox: tuple[int, int, int, int]
    confidence: float = Field(ge=0, le=100)
    vertical: bool = False
    words: list[Word] = Field(default_factory=list)


RegionKind = Literal["text", "title", "table", "caption", "header", "footer", "figure"]


class Cell(_Model):
    """One cell of a ruled table: where it sits in the grid and what it says."""

    row: int = Field(ge=0)
    col: int = Field(ge=0)
    row_span: int = Field(default=1, ge=1)
    col_span: int = Field(default=1, ge=1)
    bbox: tuple[int, int, int, int]
    text: str = ""


class Table(_Model):
    """A ruled table or form grid, cells row by row, so extraction and export can use its structure."""

    bbox: tuple[int, int, int, int]
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    cells: list[Cell] = Field(default_factory=list)


class Region(_Model):
    """A block of the page read as a unit (layout before reading), in reading order.

    ``lines`` are indices into Page.lines; ``part`` is 0, or 1 for the second page of a
    two-page spread in reading order.
    """

    kind: RegionKind = "text"
    bbox: tuple[int, int, int, int]
    vertical: bool = False
    part: int = Field(default=0, ge=0)
    lines: list[int] = Field(default_factory=list)


class Page(_Model):
    """One page: geometry found while preparing it and the text read from it.

    skew_deg and rotation_deg follow the sample corpus conventions: rotation_deg is the
    clockwise rotation that turned the upright page into the stored image; a positive
    skew_deg means the content is turned counter-clockwise.
    """

    index: int = Field(ge=0)
    text: str = ""
    blank: bool = False
    skew_deg: float = 0.0
    rotation_deg: Literal[0, 90, 180, 270] = 0
    writing_mode: WritingMode = "horizontal"
    confidence: float = Field(default=0.0, ge=0, le=100)
    dpi: int = Field(gt=0)
    width_px: int = Field(gt=0, description="of the upright, deskewed page")
    height_px: int = Field(gt=0)
    engine: str | None = None
    lines: list[Line] = Field(default_factory=list)
    regions: list[Region] = Field(default_factory=list, description="the page's blocks in reading order")
    tables: list[Table] = Field(default_factory=list, description="ruled tables and form grids found on the page")
    source_text: str | None = Field(
        default=None, description="text a scanner's own OCR put in the PDF, kept as a second witness (not searched)")
    warnings: list[str] = Field(
        default_factory=list, description="codes a person should look at, e.g. 'ink_but_no_text'")


class Evidence(_Model):
    """Where a metadata field was read from, so an archivist can check it."""

    page: int | None = None
    line: int | None = None
    text: str | None = None
    confidence: float = Field(default=0.0, ge=0, le=1)


class Metadata(_Model):
    """What a records officer would type by hand; meanings as in the samples' README."""

    document_type: str | None = None
    title: str | None = None
    document_number: str | None = None
    document_date: dt.date | None = None
    document_date_text: str | None = None
    issuer: str | None = None
    addressee: str | None = None
    fiscal_year: int | None = None
    amount: int | None = None
    counterparty: str | None = None
    evidence: dict[str, Evidence] = Field(default_factory=dict)


class PersonalData(_Model):
    type: Literal["my_number", "phone", "birth_date", "address", "person_name"]
    value: str
    page: int | None = None


class Retention(_Model):
    """Retention under the municipality's schedule (保存期間, 起算日, 満了日, 移管/廃棄)."""

    rule: str = Field(description="which schedule rule matched, e.g. 'type:通知' or 'keyword:条例'")
    period: str = Field(description="as the schedule says it: 1年未満, 1年, 3年, 5年, 10年, 30年, 永年")
    period_years: int | None = Field(description="None for 1年未満 and 永年")
    start_date: dt.date | None = None
    expiry_date: dt.date | None = None
    disposition: Disposition
    legal_hold: bool = False


class Archive(_Model):
    """Where the record's objects are stored and how they were verified."""

    bucket: str
    key: str
    version_id: str | None = None
    sha256: str
    pdfa: str = Field(description="PDF/A flavour validated before storing, e.g. 2b")
    original_key: str
    original_version_id: str | None = None
    record_key: str
    stored_at: dt.datetime
    retain_until: dt.date | None = None
    integrity: IntegrityMode = Field(
        default="object-lock",
        description="object-lock: the bucket refuses deletion until retain_until; tamper-evident: versioning and "
                    "SHA-256 only (no lock), so `kiroku verify` is what proves the archive")


class Event(_Model):
    """One thing that happened to the record (PREMIS-style): what, when, by whom or what, and how it ended."""

    type: EventType
    at: dt.datetime
    agent: str = Field(description="a person (user name) or kiroku itself, e.g. 'kiroku 0.1.0 (ingest-document)'")
    outcome: Literal["success", "failure"] = "success"
    detail: str | None = None


class Record(_Model):
    id: str
    source: Source
    pages: list[Page] = Field(default_factory=list)
    text: str = Field(default="", description="the whole document, pages joined by form feed")
    metadata: Metadata = Field(default_factory=Metadata)
    pii: list[PersonalData] = Field(default_factory=list)
    classification: str | None = Field(default=None, description="confidentiality class from schemas/classification.yaml")
    retention: Retention | None = None
    archive: Archive | None = None
    events: list[Event] = Field(default_factory=list, description="the record's history, oldest first")


def export_json_schema(path: Path = SCHEMA_PATH) -> None:
    """Write the JSON Schema other tools validate against; kept in git so changes show in review."""
    schema = Record.model_json_schema()
    path.write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    export_json_schema()
