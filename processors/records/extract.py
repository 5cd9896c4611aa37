"""The whole extraction of one document, as the pipeline and `kiroku extract` use it.

metadata.py reads what a document is; pii.py, classification.py and retention.py build
on its text model. This module puts them together, so that none of them has to import
another one lazily (metadata no longer needs pii, which needs metadata).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.records import classification as _cls
from processors.records import pii as _pii
from processors.records import retention as _ret
from processors.records.metadata import TypeCatalog, _catalog, build_doc, extract_metadata
from schemas.record import Metadata, Page, PersonalData, Retention


@dataclass
class ExtractResult:
    metadata: Metadata
    pii: list[PersonalData]  # private individuals only: what goes into Record.pii
    pii_public: list[PersonalData]  # officials and business contacts, for information
    classification: str | None
    retention: Retention | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (dates as ISO strings), in the shape of the record's fields."""
        return {
            "metadata": self.metadata.model_dump(mode="json"),
            "pii": [p.model_dump(mode="json") for p in self.pii],
            "pii_public": [p.model_dump(mode="json") for p in self.pii_public],
            "classification": self.classification,
            "retention": self.retention.model_dump(mode="json") if self.retention else None,
        }


def extract_from_text(text: str, *, pages: list[Page] | None = None, schedule: Any = None, policy: Any = None,
                      start_rule: str = "fiscal", types: TypeCatalog | str | Path | None = None,
                      completed_on: dt.date | None = None) -> ExtractResult:
    """Metadata, personal data, confidentiality class and retention of one document.

    ``text`` is the document with pages separated by form feeds; ``pages`` (OCR output with
    line boxes), when given, is used instead of ``text`` for layout. ``schedule`` and
    ``policy`` are loaded objects or YAML paths (None: the defaults in schemas/).
    """
    doc = build_doc(text, pages)
    catalog = _catalog(types)
    md = extract_metadata(doc, types=catalog)
    found = _pii.find_personal_data(doc, metadata=md, types=catalog)
    pol = policy if isinstance(policy, _cls.Policy) else _cls.load_policy(policy)
    sched = schedule if isinstance(schedule, _ret.Schedule) else _ret.load_schedule(schedule)
    return ExtractResult(
        metadata=md,
        pii=found.private,
        pii_public=found.public,
        classification=_cls.classify(found.private, md, pol),
        retention=_ret.assign_retention(md, sched, start_rule=start_rule, completed_on=completed_on),
    )
