"""bench/peer_inputs.py's verdicts: what counts as correct, refused with reason, or wrong."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("peer_inputs", Path(__file__).resolve().parents[1] / "bench" / "peer_inputs.py")
peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer)  # type: ignore[union-attr]

JP = "x.pdf: PDFが壊れていて読めません。 (damaged)"


def test_verdicts() -> None:
    one = {"pages": [{"warnings": []}]}
    assert peer.judge("a.png", "archive", one, None)[1] == "correct"
    assert peer.judge("a.png", "archive", None, JP)[1] == "wrong"
    assert peer.judge("a.pdf", "refuse", None, JP)[1] == "correct"
    assert peer.judge("a.pdf", "refuse", one, None)[1] == "wrong"
    assert peer.judge("a.pdf", "either", None, JP)[1] == "refused-with-reason"
    assert peer.judge("a.pdf", "refuse", None, "x.pdf: the PDF is damaged")[1] == "wrong"  # English only
    assert peer.judge("ocrmypdf__multipage.pdf", "archive", one, None)[1] == "wrong"  # 1 of 6 pages
    assert peer.judge("a.pdf", "archive", None, None)[1] == "wrong"
    assert peer.expectation("ocrmypdf__hugemono.pdf") == "refuse"
    assert peer.expectation("ocrmypdf__masks.pdf") == "archive"
