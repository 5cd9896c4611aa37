"""make run's supervision and terminal, the data folder found from any folder, services that are ours."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kiroku.services import test_settings

KIROKU = str(Path(sys.executable).with_name("kiroku"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIROKU_")}
    env.update(extra)
    return env


def test_every_folder_finds_the_recorded_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiroku.config import load_settings, record_home

    home = tmp_path / "install" / "var"
    home.mkdir(parents=True)
    record = tmp_path / "record"
    monkeypatch.setenv("KIROKU_HOME_RECORD", str(record))
    monkeypatch.delenv("KIROKU_HOME", raising=False)
    record_home(home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings()
    assert settings.home == home and settings.inbox == tmp_path / "install" / "inbox"


def test_search_from_another_folder_says_the_data_folder_is_missing(tmp_path: Path) -> None:
    run = subprocess.run([KIROKU, "search", "契約"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=_env(KIROKU_HOME_RECORD=str(tmp_path / "none")))
    assert run.returncode == 1
    assert "データフォルダ" in run.stderr and "KIROKU_HOME" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "var").exists(), "an empty catalog must not be created in silence"


def test_get_says_in_one_line_when_storage_is_down(tmp_path: Path) -> None:
    s = test_settings(tmp_path)
    s.home.mkdir(parents=True)
    run = subprocess.run([KIROKU, "get", "abc", "-o", str(tmp_path / "x.pdf")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=_env(KIROKU_HOME=str(s.home),
                                                          KIROKU_S3_PORT=str(s.weed_ports["s3.port"]),
                                                          KIROKU_HOME_RECORD=str(tmp_path / "none")))
    assert run.returncode == 3 and "保存先ストレージが応答しません" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_services_down_elsewhere_leaves_another_instances_sockets(tmp_path: Path) -> None:
    from kiroku import services

    s = test_settings(tmp_path)
    path = f"/tmp/seaweedfs-filer-{s.weed_ports['filer.port']}.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    try:
        services.down(s)  # no pid file of its own: nothing of ours runs
        assert os.path.exists(path), "down removed a socket of an instance it did not start"
    finally:
        sock.close()
        os.unlink(path)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


def test_a_prefect_server_we_did_not_start_is_never_adopted(tmp_path: Path) -> None:
    from kiroku import services
    from kiroku.runtime import prepare_prefect

    s = test_settings(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", s.prefect_port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    saved = os.environ.get("PREFECT_API_URL")
    try:
        assert services.prefect_answers(s)  # it answers the health check...
        assert not services.prefect_is_ours(s)  # ...but it is not ours
        assert prepare_prefect(s) is None  # ephemeral, not the stranger
        with pytest.raises(RuntimeError, match="起動したものではありません"):
            prepare_prefect(s, require_server=True)
        with pytest.raises(services.ServiceError, match="in use"):
            services.up(s, s3=False)
    finally:
        server.shutdown()
        server.server_close()
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def test_terminal_lines_say_what_became_of_each_document() -> None:
    from kiroku.terminal import outcome_line

    assert "記録ID abc" in outcome_line("総務課/a.png", "archived", {"id": "abc", "pages": 2, "seconds": 3})
    line = outcome_line("a.png", "archived", {"id": "x", "warnings": ["p1: ink_but_no_text"]})
    assert "ink_but_no_text" in line
    assert "隔離しました" in outcome_line("a.png", "quarantined", {"reason": "壊れています"})
    kept = outcome_line("a.png", "kept", {"reason": "保存先ストレージに接続できません", "attempt": 2,
                                          "retry_at": "2026-12-02T19:00:30+00:00"})
    assert "受付フォルダに残しました" in kept and "19:00:30" in kept and "attempt 2" in kept
    assert outcome_line("a.png", "reading", {"pages": 3}) is None


@pytest.mark.slow
def test_make_run_archives_restarts_a_dead_worker_and_stops_everything_when_piped(tmp_path: Path) -> None:
    """The real `kiroku run` with its output in a pipe, as `make run | tee log`."""
    from tests.e2e_fixtures import render_notice_file
    from tests.run_fixtures import start_run, write_instance

    env = write_instance(tmp_path, engine="tesseract")
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    run = start_run(tmp_path, env)
    try:
        run.wait_for("kiroku is running", 300)
        dept = tmp_path / "inbox" / "総務課"
        dept.mkdir()
        scan = render_notice_file(tmp_path / "a.png", "庁舎における節電の取組について（通知）")
        shutil.move(scan, dept / "通知.png")
        run.wait_for("総務課/通知.png → 保存しました 記録ID", 240)

        worker = run.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        n = run.wait_for("作業プロセスが停止しました", 60)
        scan = render_notice_file(tmp_path / "b.png", "道路占用の期間について（回答）", number="新土第３３号")
        shutil.move(scan, dept / "回答.png")
        run.wait_for("総務課/回答.png → 保存しました 記録ID", 300, start=n)
        assert run.worker_pid() not in (None, worker)
        children = run.descendants()
        assert len(children) >= 4  # weed, prefect, worker, forkserver + readers
    finally:
        code = run.interrupt()
    assert code == 0
    time.sleep(1)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")]
    assert alive == [], f"children left running after Ctrl-C: {alive}"
    assert (tmp_path / "var" / "done" / "総務課" / "回答.png").exists()


@pytest.mark.slow
def test_a_worker_over_its_memory_limit_finishes_its_scans_and_is_replaced(tmp_path: Path) -> None:
    """worker_max_rss_mb = 1: every worker is over the limit at its first look (5 s after it is
    ready), finishes what it holds, exits 75 and is started again; scans dropped meanwhile are
    all archived, each once, by one worker or the next."""
    from tests.e2e_fixtures import render_notice_file
    from tests.run_fixtures import start_run, write_instance

    env = write_instance(tmp_path, engine="tesseract")
    toml = tmp_path / "kiroku.toml"
    toml.write_text("worker_max_rss_mb = 1\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    run = start_run(tmp_path, env)
    titles = ["庁舎における節電の取組について（通知）", "道路占用の期間について（回答）", "会議の開催について（依頼）"]
    try:
        run.wait_for("kiroku is running", 300)
        dept = tmp_path / "inbox" / "総務課"
        dept.mkdir()
        for i, title in enumerate(titles):
            scan = render_notice_file(tmp_path / f"s{i}.png", title, number=f"新総第{100 + i}号")
            shutil.move(scan, dept / f"文書{i}.png")
            time.sleep(3)  # spread over more than one worker's life
        for i in range(len(titles)):
            run.wait_for(f"総務課/文書{i}.png → 保存しました 記録ID", 300)
    finally:
        code = run.interrupt()
    assert code == 0
    output = "\n".join(run.lines)
    assert output.count("保存しました") == len(titles), output
    assert "隔離しました" not in output
    assert sorted(p.name for p in (tmp_path / "var" / "done" / "総務課").iterdir()) == [f"文書{i}.png" for i in range(3)]
    log = (tmp_path / "var" / "run" / "worker.log").read_text(encoding="utf-8", errors="replace")
    assert log.count("作業プロセスを入れ替えます") >= 2, "the worker should have recycled itself more than once"
    assert "作業プロセスが停止しました" not in output  # a planned recycle is not reported as a crash


def test_scans_wait_in_the_inbox_while_storage_is_down_and_go_once_it_answers(tmp_path: Path) -> None:
    """The worker's watcher asks storage_gate before handing anything over (a real weed mini)."""
    from flows.watch import InboxWatcher
    from kiroku import services
    from kiroku.supervise import storage_gate

    settings = test_settings(tmp_path)
    (settings.inbox / "総務課").mkdir(parents=True)
    scan = settings.inbox / "総務課" / "通知.png"
    scan.write_bytes(b"\x89PNG waiting for storage")
    handed: list[Path] = []
    gate = storage_gate(settings, every=0.0)
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=lambda p, d: handed.append(p) or True, gate=gate)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # storage is not running: settled, but nothing is handed over
        watcher.scan()
        time.sleep(0.2)
    assert handed == [] and scan.exists()
    assert watcher.ledger.get(scan) is None, "a scan kept back by the gate must not count as an attempt"
    services.up(settings, prefect=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not handed:
            watcher.scan()
            time.sleep(0.2)
        assert handed == [scan]
    finally:
        services.down(settings, prefect=False)


def test_the_ready_banner_names_the_lan_address_when_listening_beyond_loopback(tmp_path: Path) -> None:
    from kiroku.config import lan_address

    local = test_settings(tmp_path)
    assert local.web_url == f"http://127.0.0.1:{local.web_port}/"
    assert local.prefect_ui_url == f"http://127.0.0.1:{local.prefect_port}"
    wide = test_settings(tmp_path, web_host="0.0.0.0", prefect_host="0.0.0.0")
    address = lan_address()
    assert address and not address.startswith(("0.", "127.")) or address == "127.0.0.1"
    assert wide.web_url == f"http://{address}:{wide.web_port}/"
    assert wide.prefect_ui_url == f"http://{address}:{wide.prefect_port}"
    assert test_settings(tmp_path, web_host="192.168.10.5").web_url.startswith("http://192.168.10.5:")
