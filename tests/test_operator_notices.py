"""What operators get without watching the screen: a webhook notice on failed runs, and the daily summary.

Against a real embedded Prefect server (its automations and event services run in it)
and a local HTTP receiver standing in for the office chat or mail gateway.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.reports import JST, NO_DEPARTMENT, summarize, summary_markdown


def test_summary_counts_by_department() -> None:
    day = dt.date(2026, 4, 1)
    summary = summarize(day, [("総務課", "COMPLETED"), ("総務課", "FAILED"), ("税務課", "COMPLETED"),
                              (None, "CRASHED"), ("税務課", "RUNNING")])
    d = summary.as_dict()
    assert d["total"] == {"received": 5, "archived": 2, "quarantined": 1, "crashed": 1, "in_progress": 1}
    assert d["by_department"]["総務課"] == {"received": 2, "archived": 1, "quarantined": 1, "crashed": 0,
                                          "in_progress": 0}
    assert d["by_department"][NO_DEPARTMENT]["crashed"] == 1
    md = summary_markdown(summary)
    assert md.startswith("## 本日の取込状況 2026-04-01") and "| 総務課 | 2 | 1 | 1 | 0 | 0 |" in md
    assert "| **計** | **5** | **2** | **1** | **1** | **1** |" in md


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real embedded Prefect server (loopback, auth on) for this module; yields its API URL."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from kiroku import services

    settings = services.test_settings(tmp_path_factory.mktemp("notices"), prefect_auth=True)
    services.up(settings, s3=False)
    try:
        with temporary_settings(updates={PREFECT_API_URL: settings.prefect_url,
                                         PREFECT_API_AUTH_STRING: settings.prefect_auth_file.read_text().strip()}):
            yield settings.prefect_url
    finally:
        services.down(settings, s3=False)


def _ingest_runs(names_and_fail: list[tuple[str, str, bool]]) -> None:
    from prefect import flow

    @flow(name="ingest-document", flow_run_name="{department}/{path}")
    def ingest_document(path: str, department: str | None = None, fail: bool = False) -> str:
        if fail:
            raise ValueError("読み取れないスキャン (test)")
        return path

    for path, dept, fail in names_and_fail:
        try:
            ingest_document(path, dept, fail)
        except ValueError:
            pass


@pytest.mark.slow
def test_failed_run_posts_a_notice_and_summary_counts_it(prefect_server: str, receiver) -> None:  # noqa: ANN001
    from prefect.client.orchestration import get_client

    from flows.notify import AUTOMATION_NAME, apply_failure_notice
    from flows.reports import daily_summary

    url, received = receiver
    assert apply_failure_notice(url)
    assert apply_failure_notice(url)  # applying again replaces, never duplicates
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(AUTOMATION_NAME)) == 1

    _ingest_runs([("a.png", "総務課", False), ("b.png", "総務課", True), ("c.png", "税務課", False)])
    deadline = time.monotonic() + 120
    while not received and time.monotonic() < deadline:
        time.sleep(1)
    assert received, "no notice reached the webhook within 120 s"
    notice = received[0]
    assert notice["source"] == "kiroku"
    assert notice["subject"].startswith("kiroku: 取込に失敗しました") and "Failed" in notice["subject"]
    assert "総務課/b.png" in notice["text"] and notice["text"].startswith("スキャンを保管できませんでした")
    assert len(received) == 1  # only the failed run: completed ones send nothing

    result = daily_summary(dt.datetime.now(JST).date().isoformat())
    assert result["by_department"]["総務課"]["received"] == 2
    assert result["by_department"]["総務課"]["quarantined"] == 1
    assert result["by_department"]["税務課"]["archived"] == 1
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-summary"])))
    assert arts and "| 総務課 | 2 | 1 | 1 | 0 | 0 |" in arts[0].data

    assert apply_failure_notice(None) is None  # off again
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(AUTOMATION_NAME) == []


def test_notices_are_off_by_default(tmp_path: Path) -> None:
    from kiroku.config import load_settings

    assert load_settings(tmp_path / "none.toml", home=tmp_path / "var").notify_webhook_url is None
