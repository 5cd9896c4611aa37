"""The `verify-archive` flow: the fixity check an operator schedules (weekly, say).

In tamper-evident mode (a bucket without Object Lock) this scheduled check is what
proves the archive; with Object Lock it still catches a damaged disk or a version
added by hand. The run fails when anything is wrong, so the Prefect UI shows it red,
and its artifact lists every finding in plain Japanese first.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from kiroku import wiring
from kiroku.config import load_settings


@flow(name="verify-archive", log_prints=False)
def verify_archive_flow(update_catalog: bool = True) -> dict:
    """Re-read every stored object and check its SHA-256 against record.json."""
    from processors.archive.fixity import verify_archive

    settings = load_settings()
    logger = get_run_logger()
    report = verify_archive(wiring.archive_store(settings),
                            catalog=wiring.catalog(settings) if update_catalog else None)
    rows = "\n".join(f"| {f.kind} | {f.record_id or '-'} | `{f.key}` | {f.version_id or '-'} | {f.detail} |"
                     for f in report.findings[:200])
    more = f"\n\n…and {len(report.findings) - 200} more (`kiroku verify --json`)" if len(report.findings) > 200 else ""
    table = f"\n\n| 種類 | 記録ID | キー | 版 | 内容 |\n|---|---|---|---|---|\n{rows}{more}" if rows else ""
    create_markdown_artifact(key="kiroku-verify", description=report.summary(),
                             markdown=f"## 保管庫の検証 (archive fixity check)\n\n{report.summary()}{table}\n")
    (logger.info if report.ok else logger.error)("%s", report.summary())
    if not report.ok:
        raise RuntimeError(report.summary())
    return report.to_json()
