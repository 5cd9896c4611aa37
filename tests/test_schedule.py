"""The one-PC schedule (kiroku/schedule.py): jobs fall due as their crons say, once, and catch up after a PC was off."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kiroku import schedule
from kiroku.services import test_settings

ROOT = Path(__file__).resolve().parents[1]
J = schedule.JST


def t(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=J)


def test_crons_match_the_deployments_in_prefect_yaml() -> None:
    yaml_crons = schedule.jobs_in_prefect_yaml(ROOT / "deploy" / "prefect.yaml")
    ours = {j.name: j.cron for j in schedule.jobs_for(test_settings(ROOT / "var" / "unused"))}
    assert ours == {k: yaml_crons[k] for k in ours}


def test_tamper_evident_mode_checks_fixity_every_night(tmp_path: Path) -> None:
    locked = {j.name: j.cron for j in schedule.jobs_for(test_settings(tmp_path))}
    evident = {j.name: j.cron for j in schedule.jobs_for(test_settings(tmp_path, integrity="tamper-evident"))}
    assert locked["verify-archive"] == schedule.VERIFY_WEEKLY
    assert evident["verify-archive"] == schedule.VERIFY_NIGHTLY
    assert any("改ざん検知" in line for line in schedule.describe(test_settings(tmp_path, integrity="tamper-evident")))


def test_due_first_time_only_once_its_time_comes_then_after_each_period() -> None:
    started = t(3, 9)  # a Thursday morning
    nightly = schedule.VERIFY_NIGHTLY
    assert not schedule.due(nightly, None, t(3, 12), started)
    assert schedule.due(nightly, None, t(4, 2, 30), started)
    assert not schedule.due(nightly, t(4, 2, 30), t(4, 3), started)
    assert schedule.due(nightly, t(4, 2, 30), t(5, 2, 31), started)


def test_a_time_missed_while_off_runs_once_soon_after_start() -> None:
    last = t(1, 2, 30)
    started = t(3, 9)  # off on the night of the 2nd and 3rd
    nightly = schedule.VERIFY_NIGHTLY
    assert not schedule.due(nightly, last, t(3, 9, 1), started)  # the worker is still settling
    assert schedule.due(nightly, last, t(3, 9, 6), started)


def test_scheduler_runs_due_jobs_once_and_remembers_across_restarts(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    ran: list[str] = []
    now = {"t": t(3, 9)}

    def job(name: str) -> schedule.Job:
        def run() -> None:
            ran.append(name)
            if name == "broken":
                raise RuntimeError("fixity check found a changed object")
        return schedule.Job(name, schedule.VERIFY_NIGHTLY, run, "test")

    jobs = [job("verify-archive"), job("broken")]
    s = schedule.Scheduler(settings, jobs, clock=lambda: now["t"])
    assert s.run_due() == []
    now["t"] = t(4, 2, 30)
    assert s.run_due() == ["verify-archive", "broken"]  # a failing job does not stop the next
    assert s.run_due() == []
    restarted = schedule.Scheduler(settings, jobs, clock=lambda: now["t"])
    assert restarted.run_due() == []
    assert ran == ["verify-archive", "broken"]
    assert set(restarted.last_runs()) == {"verify-archive", "broken"}


def test_status_lines_say_when_each_job_last_ran(tmp_path: Path) -> None:
    s = schedule.Scheduler(test_settings(tmp_path, integrity="tamper-evident"))
    lines = s.status_lines()
    assert len(lines) == 3 and all("未実行" in line for line in lines)
    assert lines[0].startswith("verify-archive: 改ざん検知モード")
