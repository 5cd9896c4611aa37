"""The live terminal of `make run`: a line per document (received → reading → archived as ID /
quarantined: reason / kept for a retry) and a warning when a service stops answering.

On a terminal, documents in flight are shown as live lines (rich Live) and every
outcome is printed above them for good; when the output is piped (`make run | tee
log`) only the outcome lines are written, one per event, so a log stays readable.
Japanese first, English after, as everywhere a records officer reads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

STEP_LABELS = {
    "received": "受付 received",
    "reading": "読み取り中 reading",
    "storing": "保存中 storing",
}


@dataclass
class _InFlight:
    name: str
    step: str
    since: float = field(default_factory=time.monotonic)
    pages: int | None = None


def outcome_line(name: str, step: str, detail: dict) -> str | None:
    """The permanent line for a finished step (rich markup), or None for a step still in flight."""
    n = escape(name)
    if step == "archived":
        warns = detail.get("warnings") or []
        extra = f"  [yellow]確認してください: {escape(', '.join(warns))}[/yellow]" if warns else ""
        return (f"[green]✓ {n} → 保存しました 記録ID {detail.get('id')}[/green] "
                f"({detail.get('pages', '?')}頁, {detail.get('seconds', '?')}秒){extra}")
    if step == "duplicate":
        return f"[green]= {n} は保存済みです (already archived as {detail.get('id')})[/green]"
    if step == "quarantined":
        return f"[red]✗ {n} → 隔離しました (quarantined): {escape(str(detail.get('reason', '')))}[/red]"
    if step == "kept":
        when = str(detail.get("retry_at") or "")[11:19]
        return (f"[yellow]… {n} → 受付フォルダに残しました。{when} (UTC) ごろ再試行します "
                f"(kept for a retry, attempt {detail.get('attempt', 1)}): "
                f"{escape(str(detail.get('reason', '')))}[/yellow]")
    if step == "left":
        return f"[red]✗ {n}: {escape(str(detail.get('reason', '')))}[/red]"
    return None


class Board:
    """Documents in flight and service warnings, drawn on one console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._docs: dict[str, _InFlight] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(self._render(), console=console, refresh_per_second=2, transient=True,
                              get_renderable=self._render)

    def __enter__(self) -> "Board":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def _render(self) -> Group:
        now = time.monotonic()
        with self._lock:
            docs = list(self._docs.values())
        lines = []
        for d in docs:
            label = STEP_LABELS.get(d.step, d.step)
            pages = f" ({d.pages}頁)" if d.pages else ""
            lines.append(Text.from_markup(f"  [cyan]⋯ {escape(d.name)}[/cyan]  {label}{pages}  "
                                          f"[dim]{now - d.since:.0f}秒[/dim]"))
        return Group(*lines)

    def print(self, markup: str) -> None:
        try:
            self.console.print(markup)
        except (OSError, ValueError):  # output closed (the reader of a pipe is gone): go on silently
            pass

    def document(self, name: str, step: str, detail: dict) -> None:
        """One progress event from the worker (flows.ingest._progress)."""
        line = outcome_line(name, step, detail)
        with self._lock:
            if line is not None:
                self._docs.pop(name, None)
            else:
                doc = self._docs.setdefault(name, _InFlight(name, step))
                doc.step = step
                if detail.get("pages"):
                    doc.pages = int(detail["pages"])
        if line is not None:
            self.print(line)
        elif self._live is None and step == "received":
            self.print(f"[cyan]→ {escape(name)} 受付 (received)[/cyan]")

    def service(self, name: str, answering: bool, since: float | None = None) -> None:
        label = SERVICE_LABELS.get(name, name)
        if answering:
            down = f" ({time.monotonic() - since:.0f}秒停止していました)" if since else ""
            self.print(f"[green]✓ {label} が復旧しました{down} ({name} is answering again)[/green]")
        else:
            self.print(f"[bold red]⚠ {label} が応答しません。新しいスキャンは受付フォルダで待ちます "
                       f"({name} stopped answering; scans wait in the inbox)[/bold red]")


SERVICE_LABELS = {"seaweedfs": "保存先ストレージ", "prefect": "Prefect サーバー", "worker": "作業プロセス"}
