"""`kiroku process`: the reading pipeline without storage, pages in parallel on every core.

This is the contract every evaluation uses (DIR/<stem>.pdf and DIR/<stem>.json per
input), so it runs plain Python, without Prefect: the warm reader processes of
kiroku/readers.py (the same ones the flows use) read pages, and each document is
finished (metadata, retention, PDF/A) by a reader as soon as its last page is read,
while the main process loads the next scans. A reader that dies or hangs fails only
the document whose page it held.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kiroku.config import Settings, usable_cpu_count
from kiroku.readers import ReaderPool, page_time_limit
from processors.archive.names import display_name, fit_name
from processors.document import finish_document, prepare_and_read, start_record
from processors.reading.pages import InputError, PreparedPage, SourcePage
from schemas.record import Page, Record


@dataclass
class Outcome:
    input: Path
    record: Record | None = None
    pdf: Path | None = None
    error: str | None = None


@dataclass
class _Pending:
    input: Path
    record: Record
    stem: str
    page_futures: list[Future] = field(default_factory=list)


def _read_page(source: SourcePage, engine: str) -> tuple[PreparedPage, Page]:
    """prepare_and_read, minus the OCR copy of the page on the way back: only the archive
    image is needed from here on, and the OCR copy would double what crosses processes."""
    prepared, page = prepare_and_read(source, engine)
    prepared.ocr_image = np.zeros((1, 1), dtype=np.uint8)
    return prepared, page


def output_stems(inputs: list[Path], out_dir: Path) -> dict[Path, str]:
    """The output name (without .pdf/.json) for each input: never an input's own path, never shared.

    An input keeps its stem (`001.jpg` -> `001.pdf`, what the evaluation expects) when
    no earlier input took it; a later `001.png` becomes `001.png.pdf`. An output that
    would land on an input (`process x.pdf --out .`) gets another name, so the scan is
    never written over. Names are the display form (a Shift_JIS name decoded) and fit
    NAME_MAX.
    """
    def same_file(a: Path, b: str) -> bool:
        return os.path.realpath(a) == b

    inputs_real = {os.path.realpath(p) for p in inputs}
    taken: set[str] = set()
    stems: dict[Path, str] = {}

    def free(stem: str) -> bool:
        if stem in taken:
            return False
        return not any(same_file(out_dir / f"{stem}{ext}", real) for ext in (".pdf", ".json") for real in inputs_real)

    for path in inputs:
        name = display_name(path.name)
        stem = Path(name).stem or name
        candidates = [fit_name(stem, reserve=5), fit_name(name, reserve=5)]
        chosen = next((c for c in candidates if free(c)), None)
        n = 2
        while chosen is None:
            candidate = fit_name(f"{name}~{n}", reserve=5)
            chosen = candidate if free(candidate) else None
            n += 1
        taken.add(chosen)
        stems[path] = chosen
    return stems


def _finish(record: Record, pages: list[tuple[PreparedPage, Page]], out_dir: Path,
            extract_options: dict, stem: str) -> tuple[Record, Path]:
    pdf_path = out_dir / f"{stem}.pdf"
    finished = finish_document(record, pages, pdf_path, extract_options)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(finished.model_dump_json(indent=1), encoding="utf-8")
    return finished, pdf_path


def _load(path: Path, settings: Settings):
    from processors.reading.images import load_document

    return load_document(path, max_pixels=settings.max_image_pixels, default_dpi=settings.default_dpi)


def process_files(inputs: list[Path], out_dir: Path, settings: Settings, *, engine: str | None = None,
                  workers: int | None = None, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Read every input into out_dir; a bad input is reported in its Outcome, never stops the rest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or settings.ocr_engine
    workers = workers or settings.ocr_concurrency or usable_cpu_count()
    outcomes: dict[Path, Outcome] = {p: Outcome(input=p) for p in inputs}
    stems = output_stems(inputs, out_dir)
    with ReaderPool(engine, workers, max_jobs=settings.reader_max_jobs,
                    max_rss_mb=settings.reader_max_rss_mb) as pool:
        pending: list[_Pending] = []
        finishing: dict[Future, Path] = {}

        def report(path: Path) -> None:
            if on_done:
                on_done(outcomes[path])

        def drain(block: bool) -> None:
            """Finish documents whose pages are all read; collect finished ones."""
            # only futures still running: a done one would make wait() return at once, and
            # the loop would spin on a core the workers need (it took half of one)
            futures = [f for p in pending for f in p.page_futures if not f.done()]
            futures += [f for f in finishing if not f.done()]
            if block and futures:
                wait(futures, return_when=FIRST_COMPLETED)
            for item in list(pending):
                if all(f.done() for f in item.page_futures):
                    pending.remove(item)
                    try:
                        pages = [f.result() for f in item.page_futures]
                    except Exception as exc:  # noqa: BLE001 - reported per input
                        outcomes[item.input].error = _describe(exc)
                        report(item.input)
                        continue
                    finishing[pool.submit(_finish, item.record, pages, out_dir, settings.extract_options,
                                          item.stem,
                                          time_limit=settings.reader_time_limit * 2,
                                          label=f"{item.input.name} (PDF/A)")] = item.input
            for fut in [f for f in finishing if f.done()]:
                path = finishing.pop(fut)
                try:
                    outcomes[path].record, outcomes[path].pdf = fut.result()
                except Exception as exc:  # noqa: BLE001
                    outcomes[path].error = _describe(exc)
                report(path)

        for path in inputs:
            try:
                loaded = _load(path, settings)
            except Exception as exc:  # noqa: BLE001
                outcomes[path].error = _describe(exc)
                report(path)
                continue
            record = start_record(loaded)
            item = _Pending(input=path, record=record, stem=stems[path])
            item.page_futures = [
                pool.submit(_read_page, page, engine, label=f"{path.name} p{page.index + 1}",
                            time_limit=page_time_limit(page, settings.reader_time_limit,
                                                       settings.reader_time_limit_per_mpx))
                for page in loaded.pages]
            pending.append(item)
            del loaded
            # read ahead so no core waits for the next scan to be decoded, but keep memory
            # bounded (a colour A4 page is about 30 MB decoded)
            while len(pending) + len(finishing) > workers * 3:
                drain(block=True)
        while pending or finishing:
            drain(block=True)
    return [outcomes[p] for p in inputs]


def _describe(exc: BaseException) -> str:
    from processors.archive.failures import KirokuFailure

    if isinstance(exc, (InputError, KirokuFailure)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
