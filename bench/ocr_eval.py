"""Measure kiroku's OCR engines on the sample corpus: accuracy (CER) and speed.

    .venv/bin/python bench/ocr_eval.py [--engines tesseract,rapidocr,auto] [--samples DIR] [--workers 2] [--docs d2_001,...]
                                      [--runtime openvino|onnxruntime]

Only reading is measured, not geometry: every page is turned upright and straightened
with the TRUE rotation and skew from its *.truth.json, converted to gray, red seal ink
dropped and the paper tone evened (a stand-in for processors' own page preparation),
then read by each engine. CER is computed exactly as /work/shared/eval/score.py does
(NFKC, all whitespace removed, Levenshtein distance / truth length, per document with
its non-blank pages joined). Pages run in a pool of ``--workers`` processes with
OMP_THREAD_LIMIT=1, the way the pipeline runs them; seconds per page are the engine's
wall time inside a worker (tesseract's subprocess included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from processors.reading.pages import PreparedPage  # noqa: E402
from processors.reading.textnorm import normalize_for_compare  # noqa: E402

DEFAULT_SAMPLES = ROOT.parent / "shared" / "samples"


def decode_pages(path: Path) -> list[Image.Image]:
    """Every page of a sample file as a PIL image (PDF pages are one full-page JPEG each)."""
    if path.suffix.lower() == ".pdf":
        import pikepdf

        out = []
        with pikepdf.open(path) as pdf:
            for pg in pdf.pages:
                images = list(pg.get_images().values()) if hasattr(pg, "get_images") else list(pg.images.values())
                if not images:
                    raise ValueError(f"{path.name}: a page without an image")
                out.append(pikepdf.PdfImage(images[0]).as_pil_image())
        return out
    img = Image.open(path)
    out = []
    for i in range(getattr(img, "n_frames", 1)):
        img.seek(i)
        out.append(img.copy())
    return out


def clean_gray(img: Image.Image) -> np.ndarray:
    """Gray reading copy: red seal ink dropped, paper tone evened (what prepare would give)."""
    if img.mode == "RGB":
        rgb = np.asarray(img, dtype=np.int16)
        gray = np.asarray(img.convert("L"), dtype=np.uint8).copy()
        red = (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])) > 40
        gray[red] = 255
    else:
        gray = np.asarray(img.convert("L"), dtype=np.uint8).copy()
    import cv2

    # background = a closed, blurred copy at 1/8 size; dividing by it evens shadows and tints
    small = cv2.resize(gray, (max(1, gray.shape[1] // 8), max(1, gray.shape[0] // 8)), interpolation=cv2.INTER_AREA)
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    bg = cv2.GaussianBlur(bg, (0, 0), 3)
    bg = cv2.resize(bg, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = np.clip(gray.astype(np.float32) * 255.0 / np.maximum(bg.astype(np.float32), 1.0), 0, 255)
    return out.astype(np.uint8)


def prepared_from_truth(img: Image.Image, truth_page: dict, index: int, clean: str = "simple") -> PreparedPage:
    """Upright with the true rotation (counter-clockwise), straight with the true skew (clockwise).

    ``clean="simple"`` makes the reading copy here (gray, red dropped, tone evened, at
    the scan's resolution, ocr_scale 1); ``clean="prepare"`` uses the pipeline's own
    processors.reading.prepare.make_ocr_image (also scaled to 300 dpi, so ocr_scale != 1 on
    200 and 400 dpi scans).
    """
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    rot = int(truth_page["rotation_deg"]) % 360
    if rot:
        img = img.rotate(rot, expand=True)
    skew = float(truth_page["skew_deg"])
    if skew:
        fill = 255 if img.mode == "L" else (255, 255, 255)
        img = img.rotate(-skew, resample=Image.BICUBIC, expand=False, fillcolor=fill)
    dpi = int(truth_page.get("dpi") or 300)
    if clean == "prepare":
        from processors.reading.prepare import make_ocr_image

        ocr_image, scale = make_ocr_image(img, dpi)
    else:
        ocr_image, scale = clean_gray(img), 1.0
    return PreparedPage(
        index=index,
        archive_image=img,
        ocr_image=ocr_image,
        ocr_scale=scale,
        dpi=dpi,
        rotation_deg=rot,
        skew_deg=skew,
        writing_mode=truth_page["writing_mode"],
        blank=bool(truth_page["blank"]),
    )


_BUILT: dict = {}


def make_engine(spec: str):
    """``name`` or ``name:key=value,key=value`` (e.g. ``rapidocr:det_max_side=1280``) -> engine.

    Plain names come from processors.reading.ocr.get_engine; options build a fresh instance of
    the engine class so variants can be compared in one run.
    """
    from processors.reading import ocr

    if spec in _BUILT:
        return _BUILT[spec]
    if ":" not in spec:
        eng = ocr.get_engine(spec)
    else:
        name, opts = spec.split(":", 1)
        kwargs = {}
        for kv in opts.split(","):
            k, v = kv.split("=", 1)
            try:
                kwargs[k] = int(v)
            except ValueError:
                try:
                    kwargs[k] = float(v)
                except ValueError:
                    kwargs[k] = v
        cls = {"tesseract": ocr.TesseractEngine, "rapidocr": ocr.RapidOcrEngine, "auto": ocr.AutoEngine}[name]
        eng = cls(**kwargs)
    _BUILT[spec] = eng
    return eng


def _work(job: tuple[str, str, int, str, str]) -> dict:
    samples, doc_id, index, engine_name, clean = job

    truth = json.loads((Path(samples) / f"{doc_id}.truth.json").read_text(encoding="utf-8"))
    img = decode_pages(Path(samples) / truth["file"])[index]
    page = prepared_from_truth(img, truth["pages"][index], index, clean)
    engine = make_engine(engine_name)
    import resource

    def cpu() -> float:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    text = engine.read(page)
    dt, dc = time.perf_counter() - t0, cpu() - c0
    return {"doc": doc_id, "page": index, "engine": engine_name, "text": text.text, "seconds": dt, "cpu": dc, "used": text.engine}


def _warm(engine_name: str) -> None:
    """Load models once per worker so the first page does not pay for it."""
    eng = make_engine(engine_name)
    blank = np.full((64, 256), 255, np.uint8)
    page = PreparedPage(0, Image.fromarray(blank), blank, 1.0, 300, 0, 0.0, "horizontal", False)
    try:
        eng.read(page)
    except Exception:  # noqa: BLE001 - warming only
        pass


def _init(engines: list[str]) -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"
    for e in engines:
        _warm(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    ap.add_argument("--engines", default="tesseract,rapidocr,auto", help="comma-separated; name or name:key=value,... (use ';' between specs with options)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--docs", default="", help="comma-separated document ids (default: all)")
    ap.add_argument("--clean", choices=("simple", "prepare"), default="simple",
                    help="reading copy: simple (here, ocr_scale 1) or prepare (processors.reading.prepare.make_ocr_image)")
    ap.add_argument("--runtime", choices=("openvino", "onnxruntime"), default=None,
                    help="what runs the PP-OCR models (default: processors.reading.ocr.inference_runtime's choice)")
    ap.add_argument("--dump", type=Path, default=None, help="write every engine's page text here")
    ap.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)

    if args.runtime:
        os.environ["KIROKU_OCR_RUNTIME"] = args.runtime  # read by the workers when they load the models
    if not args.samples.is_dir():
        print(f"no samples at {args.samples}", file=sys.stderr)
        return 2
    sep = ";" if ";" in args.engines or ":" in args.engines else ","
    engines = [e.strip() for e in args.engines.split(sep) if e.strip()]
    want = {d.strip() for d in args.docs.split(",") if d.strip()}
    truths = []
    for tp in sorted(args.samples.glob("*.truth.json")):
        t = json.loads(tp.read_text(encoding="utf-8"))
        if want and t["id"] not in want:
            continue
        truths.append(t)
    jobs = [
        (str(args.samples), t["id"], i, e, args.clean)
        for e in engines
        for t in truths
        for i, p in enumerate(t["pages"])
        if not p["blank"]
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_init, initargs=(engines,)) as ex:
        results = list(ex.map(_work, jobs))
    wall = time.perf_counter() - t0

    by = {(r["engine"], r["doc"], r["page"]): r for r in results}
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for r in results:
            (args.dump / f"{r['doc']}_{r['page']}.{r['engine']}.txt").write_text(r["text"] + "\n", encoding="utf-8")

    summary: dict = {"engines": {}, "wall_s": round(wall, 1), "pages": len(jobs)}
    head = f"{'doc':8} {'type':5} {'mode':10} " + " ".join(f"{e:>10}" for e in engines)
    print(head)
    totals = {e: {"all": [0, 0], "horizontal": [0, 0], "vertical": [0, 0], "secs": [], "cpu": [], "docs": {}, "used": {}} for e in engines}
    for t in truths:
        nonblank = [(i, p) for i, p in enumerate(t["pages"]) if not p["blank"]]
        truth_text = normalize_for_compare("\n".join(p["text"] for _, p in nonblank))
        mode = t["pages"][0]["writing_mode"]
        cells = []
        for e in engines:
            pred = "\n".join(by[(e, t["id"], i)]["text"] for i, _ in nonblank)
            d = Levenshtein.distance(truth_text, normalize_for_compare(pred))
            n = max(1, len(truth_text))
            tot = totals[e]
            for k in ("all", mode):
                tot[k][0] += d
                tot[k][1] += n
            tot["docs"][t["id"]] = round(d / n, 4)
            for i, _ in nonblank:
                r = by[(e, t["id"], i)]
                tot["secs"].append(r["seconds"])
                tot["cpu"].append(r["cpu"])
                tot["used"][r["used"]] = tot["used"].get(r["used"], 0) + 1
            cells.append(f"{100 * d / n:9.2f}%")
        print(f"{t['id']:8} {t['metadata']['document_type']:5} {mode:10} " + " ".join(cells))
    print()
    for e in engines:
        tot = totals[e]
        secs = tot["secs"]
        cer = {k: (tot[k][0] / tot[k][1] if tot[k][1] else None) for k in ("all", "horizontal", "vertical")}
        worst_h = max((v for d, v in tot["docs"].items() if d in {t["id"] for t in truths if t["pages"][0]["writing_mode"] == "horizontal"}), default=None)
        mean_s = sum(secs) / len(secs) if secs else 0.0
        mean_cpu = sum(tot["cpu"]) / len(tot["cpu"]) if tot["cpu"] else 0.0
        summary["engines"][e] = {
            "cer": {k: (round(v, 4) if v is not None else None) for k, v in cer.items()},
            "docs": tot["docs"],
            "seconds_per_page": round(mean_s, 2),
            "cpu_seconds_per_page": round(mean_cpu, 2),
            "max_seconds_per_page": round(max(secs), 2) if secs else 0.0,
            "pages_per_min_2_cores": round(2 * 60 / mean_cpu, 1) if mean_cpu else None,
            "pages_by_engine": tot["used"],
        }
        fmt = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        print(
            f"{e:10} CER all {fmt(cer['all'])}  horizontal {fmt(cer['horizontal'])}  vertical {fmt(cer['vertical'])}"
            f"  worst horizontal doc {fmt(worst_h)}  |  {mean_s:.2f} s/page wall (max {max(secs) if secs else 0:.2f}),"
            f" {mean_cpu:.2f} s/page CPU => {2 * 60 / mean_cpu if mean_cpu else 0:.0f} pages/min OCR-only on 2 cores"
            f"  used {tot['used']}"
        )
    print(f"\nwall {wall:.1f} s for {len(jobs)} page readings with {args.workers} workers")
    if args.json:
        args.json.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
