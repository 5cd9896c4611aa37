"""The scheduled flows of a one-PC installation: fixity check, daily summary, retention report.

On several machines an operator deploys deploy/prefect.yaml and Prefect's scheduler
runs these. `make run` has no deployments (its worker runs flow runs in-process, see
kiroku/supervise.py), so without this module nothing would ever run them there, and a
bucket in tamper-evident mode (no Object Lock) would have no scheduled `verify` at all,
which is the one thing that mode promises.

The crons are the same as deploy/prefect.yaml's (a test keeps them in step), except
that in tamper-evident mode the fixity check runs every night instead of weekly. The
time each job last ran is kept in var/state/schedule.json, so that a restart does not
run a job twice, and a job whose time passed while the PC was off (an office PC is
off at 02:30 on a Sunday) runs once soon after the next start instead of being lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from cronsim import CronSim

from kiroku.config import Settings

log = logging.getLogger("kiroku.schedule")

JST = ZoneInfo("Asia/Tokyo")
CHECK_EVERY = 60.0  # seconds between looks at the clock
CATCH_UP_DELAY = dt.timedelta(minutes=5)  # a missed job waits this long after start (the readers warm first)


@dataclass(frozen=True)
class Job:
    """One scheduled flow: its Prefect deployment name, its cron (Asia/Tokyo) and how to run it."""

    name: str
    cron: str
    run: Callable[[], object]
    why: str


def _verify() -> object:
    from flows.verify import verify_archive_flow

    return verify_archive_flow()


def _daily_summary() -> object:
    from flows.reports import daily_summary

    return daily_summary()


def _retention_report() -> object:
    from flows.reports import retention_report

    return retention_report()


VERIFY_WEEKLY = "30 2 * * 0"  # Sundays 02:30, as deploy/prefect.yaml
VERIFY_NIGHTLY = "30 2 * * *"  # tamper-evident mode: the check is the archive's only proof
DAILY_SUMMARY = "55 23 * * *"
RETENTION_REPORT = "0 7 1 * *"


def jobs_for(settings: Settings) -> list[Job]:
    """The jobs this installation runs; the fixity check nightly when the bucket cannot lock."""
    from processors.archive.storage import TAMPER_EVIDENT

    tamper_evident = settings.integrity == TAMPER_EVIDENT
    return [
        Job("verify-archive", VERIFY_NIGHTLY if tamper_evident else VERIFY_WEEKLY, _verify,
            "改ざん検知モードのため毎晩 (tamper-evident mode: nightly)" if tamper_evident
            else "毎週日曜 (weekly)"),
        Job("daily-summary", DAILY_SUMMARY, _daily_summary, "毎日 23:55 (daily)"),
        Job("retention-report", RETENTION_REPORT, _retention_report, "毎月1日 07:00 (monthly)"),
    ]


def describe(settings: Settings) -> list[str]:
    """One line per job for the banner and `kiroku services status`."""
    return [f"{j.name}: {j.why} (cron {j.cron}, Asia/Tokyo)" for j in jobs_for(settings)]


def next_after(cron: str, after: dt.datetime) -> dt.datetime:
    """The first time the cron fires strictly after `after` (Asia/Tokyo)."""
    return next(CronSim(cron, after.astimezone(JST)))


def due(cron: str, last_run: dt.datetime | None, now: dt.datetime, started: dt.datetime) -> bool:
    """Whether a job should run now.

    Never run: due once its first time after `started` comes, so a fresh installation
    does not check an empty archive at start. Run before: due when its next time after
    the last run has passed, which also catches up a time missed while kiroku was off,
    once, CATCH_UP_DELAY after start.
    """
    if last_run is None:
        return now >= next_after(cron, started)
    if now < started + CATCH_UP_DELAY and next_after(cron, last_run) < started:
        return False  # missed while off: wait until the worker is settled
    return now >= next_after(cron, last_run)


class Scheduler:
    """A thread of the worker that runs the jobs as they fall due, one at a time."""

    def __init__(self, settings: Settings, jobs: list[Job] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(JST)) -> None:
        self.settings = settings
        self.jobs = jobs if jobs is not None else jobs_for(settings)
        self.clock = clock
        self.started = clock()
        self.path = settings.home / "state" / "schedule.json"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="kiroku-schedule", daemon=True)

    def last_runs(self) -> dict[str, dt.datetime]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out = {}
        for name, when in data.items():
            try:
                out[name] = dt.datetime.fromisoformat(when)
            except (TypeError, ValueError):
                continue
        return out

    def _remember(self, name: str, when: dt.datetime) -> None:
        data = {k: v.isoformat() for k, v in self.last_runs().items()}
        data[name] = when.isoformat()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def status_lines(self) -> list[str]:
        """Each job, when it runs and when it last ran, for `kiroku services status`."""
        last = self.last_runs()
        out = []
        for job in self.jobs:
            when = last.get(job.name)
            shown = when.isoformat(timespec="minutes") if when else "未実行 (not yet)"
            out.append(f"{job.name}: {job.why} (cron {job.cron}, Asia/Tokyo); 前回 (last run): {shown}")
        return out

    def run_due(self) -> list[str]:
        """Run every job that is due now; returns their names. A failing job is logged, not fatal:
        a failed fixity check is a red run in the Prefect UI with its artifact, which is the point."""
        ran = []
        last = self.last_runs()
        for job in self.jobs:
            if self.stop.is_set():
                break
            now = self.clock()
            if not due(job.cron, last.get(job.name), now, self.started):
                continue
            self._remember(job.name, now)  # before running: a job that kills the worker is not re-run in a loop
            ran.append(job.name)
            log.info("定期処理 %s を実行します (scheduled flow %s)", job.name, job.name)
            try:
                job.run()
            except Exception as exc:  # noqa: BLE001 - the flow run itself records the failure
                log.error("定期処理 %s が失敗しました (scheduled flow failed): %s", job.name, exc)
        return ran

    def _loop(self) -> None:
        while not self.stop.wait(CHECK_EVERY):
            self.run_due()

    def start(self) -> "Scheduler":
        for line in describe(self.settings):
            log.info("定期処理 (schedule) %s", line)
        self.thread.start()
        return self


def jobs_in_prefect_yaml(path: Path) -> dict[str, str]:
    """{deployment name: cron} of deploy/prefect.yaml (for the test that keeps both in step)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = {}
    for d in data.get("deployments", []):
        for s in d.get("schedules") or []:
            if "cron" in s:
                out[d["name"]] = s["cron"]
    return out
