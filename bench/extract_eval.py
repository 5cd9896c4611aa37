#!/usr/bin/env python3
"""Measure metadata and personal-data extraction on the sample truth texts.

    python bench/extract_eval.py [--samples ../shared/samples] [--noise-seeds 5] [--harsh]
                                 [--ocr-json DIR] [--verbose] [--json OUT]

Runs processors.records.metadata.extract_from_text on each sample's exact text (pages joined by
form feed) and prints per-field exact-match accuracy with the scorer's normalisation
(NFKC + whitespace removal, honorifics ignored on issuer/addressee/counterparty), and
PII recall / strict precision / lenient precision as /work/shared/eval/score.py counts
them. It then does the same on copies of the texts with simulated OCR noise (spaces
inserted between characters, full/half-width swaps, a few typical misreadings such as
第->築, 号->兮, 日->曰, 一->ー), several seeds per document.

--harsh adds a level with lost characters and seal debris at line ends. --ocr-json DIR
evaluates real OCR output: DIR/<id>.json with pages[].text, e.g. the output folder of
`kiroku process`; when the pages are full Page records (with line boxes) the layout is
used as in the pipeline.

This measures the text rules; the OCR itself is measured by the scorer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.records.extract import extract_from_text  # noqa: E402

FIELDS = ["document_type", "title", "document_number", "document_date", "document_date_text", "issuer",
          "addressee", "fiscal_year", "amount", "counterparty"]
DEFAULT_SAMPLES = ROOT.parent / "shared" / "samples"
SCORER = ROOT.parent / "shared" / "eval" / "score.py"


def _load_scorer_norms():
    """norm_field / norm_pii from the evaluator itself when it is there, else a faithful copy."""
    if SCORER.exists():
        spec = importlib.util.spec_from_file_location("kiroku_score", SCORER)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
            return mod.norm_field, mod.norm_pii
        except Exception:  # noqa: BLE001 - fall back to the copy below
            pass

    ws = re.compile(r"\s+")

    def norm_text(s):
        return "" if s is None else ws.sub("", unicodedata.normalize("NFKC", str(s)))

    def strip_honorific(s):
        changed = True
        while changed:
            changed = False
            for h in ("御中", "様", "殿", "さま", "宛"):
                if s.endswith(h) and len(s) > len(h):
                    s, changed = s[: -len(h)], True
        return s

    def norm_field(name, v):
        if v is None:
            return None
        if name == "document_date":
            from processors.records.dates import parse_date
            d = parse_date(str(v))
            return d.isoformat() if d else None
        if name in ("fiscal_year", "amount"):
            try:
                return int(re.sub(r"[^\d-]", "", norm_text(v)))
            except ValueError:
                return None
        s = norm_text(v)
        if name in ("issuer", "addressee", "counterparty"):
            s = strip_honorific(s)
        return s or None

    def norm_pii(t, v):
        if v is None:
            return None
        if t in ("my_number", "phone"):
            s = re.sub(r"\D", "", norm_text(v))
        elif t == "birth_date":
            from processors.records.dates import parse_date
            d = parse_date(str(v))
            s = d.isoformat() if d else None
        elif t == "address":
            s = re.sub(r"^〒?\d{3}-?\d{4}", "", norm_text(v))
        else:
            s = strip_honorific(norm_text(v))
        return s or None

    return norm_field, norm_pii


norm_field, norm_pii = _load_scorer_norms()

# typical misreadings of tesseract jpn on municipal print (truth char -> OCR char)
CONFUSIONS = {"第": "築", "号": "兮", "日": "曰", "一": "ー", "ー": "一", "口": "ロ", "ロ": "口", "力": "カ",
              "カ": "力", "工": "エ", "エ": "工", "二": "ニ", "ニ": "二", "八": "ハ", "夕": "タ", "卜": "ト",
              "〇": "○", "（": "(", "）": ")", "：": ":"}
_TO_FW = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
_TO_HW = {v: k for k, v in _TO_FW.items()}


JUNK = ["|", "RE", "1", "ゆ", "レーン", ".", "'", "an"]


def ocr_noise(text: str, rng: random.Random, space_rate: float = 0.06, sub_rate: float = 0.02,
              width_rate: float = 0.15, drop_rate: float = 0.0, junk_rate: float = 0.0) -> str:
    """A copy of ``text`` as a middling OCR engine might return it (line structure kept).

    drop_rate loses characters and junk_rate appends seal/speck debris after a wide gap at
    line ends (both seen in tesseract output of the samples); both are 0 by default.
    """
    out = []
    for ch in text:
        if ch in "\n\f":
            if junk_rate and rng.random() < junk_rate:
                out.append(" " * rng.randint(2, 30) + rng.choice(JUNK))
            out.append(ch)
            continue
        if drop_rate and rng.random() < drop_rate:
            continue
        c = ch
        if c in CONFUSIONS and rng.random() < sub_rate * 5:  # confusable characters are misread more often
            c = CONFUSIONS[c]
        elif rng.random() < width_rate:
            c = _TO_FW.get(c, _TO_HW.get(c, c))
        out.append(c)
        if rng.random() < space_rate:
            out.append(rng.choice([" ", " ", "\u3000"]))
    return "".join(out)


def load_truths(samples: Path) -> list[dict]:
    truths = []
    for p in sorted(samples.glob("*.truth.json")):
        truths.append(json.loads(p.read_text(encoding="utf-8")))
    return truths


def doc_text(t: dict) -> str:
    return "\f".join(p["text"] for p in t["pages"])


def evaluate(docs: list[tuple], verbose: bool = False, label: str = "") -> dict:
    """docs: (truth, text) or (truth, text, pages) where pages are schemas.record.Page objects."""
    ok = defaultdict(int)
    n = 0
    tp = tpl = npred = ntruth = 0
    misses: list[str] = []
    class_counts: dict[str, int] = defaultdict(int)
    for t, text, *rest in docs:
        n += 1
        res = extract_from_text(text, pages=rest[0] if rest else None)
        md = res.metadata.model_dump(mode="json")
        for f in FIELDS:
            tv, pv = norm_field(f, t["metadata"].get(f)), norm_field(f, md.get(f))
            if tv == pv:
                ok[f] += 1
            elif verbose:
                misses.append(f"{label}{t['id']} {f}: truth={t['metadata'].get(f)!r} got={md.get(f)!r}")
        T = {(x["type"], norm_pii(x["type"], x["value"])) for x in t.get("pii", [])}
        PUB = {(x["type"], norm_pii(x["type"], x["value"])) for x in t.get("pii_public", [])}
        P = {(x.type, norm_pii(x.type, x.value)) for x in res.pii}
        P.discard((None, None))
        tp += len(T & P)
        tpl += len((T | PUB) & P)
        npred += len(P)
        ntruth += len(T)
        class_counts[res.classification or "-"] += 1
        if verbose:
            for a, b in sorted(T - P):
                misses.append(f"{label}{t['id']} pii missed {a}:{b}")
            for a, b in sorted(P - T):
                misses.append(f"{label}{t['id']} pii false {a}:{b}{' (public)' if (a, b) in PUB else ''}")
    return {
        "documents": n,
        "fields": {f: ok[f] / n for f in FIELDS} if n else {},
        "all_fields": sum(ok.values()) / (n * len(FIELDS)) if n else None,
        "pii": {"truth": ntruth, "pred": npred, "tp": tp,
                "recall": tp / ntruth if ntruth else None,
                "precision": tp / npred if npred else None,
                "precision_lenient": tpl / npred if npred else None},
        "classification": dict(class_counts),
        "misses": misses,
    }


def show(title: str, r: dict) -> None:
    print(f"\n== {title} ({r['documents']} documents)")
    for f, v in r["fields"].items():
        print(f"  {f:20s} {v * 100:6.1f}%")
    print(f"  {'ALL FIELDS':20s} {r['all_fields'] * 100:6.1f}%")
    p = r["pii"]

    def pct(v):
        return "   n/a" if v is None else f"{v * 100:6.1f}%"
    print(f"  PII truth={p['truth']} pred={p['pred']} tp={p['tp']}  recall {pct(p['recall'])}  "
          f"precision {pct(p['precision'])}  lenient {pct(p['precision_lenient'])}")
    for m in r["misses"]:
        print("   -", m)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    ap.add_argument("--noise-seeds", type=int, default=5, help="noisy copies per document (0: skip)")
    ap.add_argument("--harsh", action="store_true",
                    help="also run a harsher noise level: 1%% of characters lost, debris after 10%% of lines")
    ap.add_argument("--ocr-json", type=Path, metavar="DIR",
                    help="also evaluate on real OCR text: DIR/<id>.json (or <stem>.json) with pages[].text, "
                         "e.g. the output folder of `kiroku process`")
    ap.add_argument("--verbose", "-v", action="store_true", help="list every mismatch")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if not args.samples.is_dir():
        print(f"no samples at {args.samples}", file=sys.stderr)
        return 2
    truths = load_truths(args.samples)
    clean = evaluate([(t, doc_text(t)) for t in truths], args.verbose)
    show("truth text", clean)
    out = {"truth_text": clean}
    if args.noise_seeds:
        noisy_docs = []
        for seed in range(args.noise_seeds):
            for t in truths:
                rng = random.Random(f"{t['id']}:{seed}")
                noisy_docs.append((t, ocr_noise(doc_text(t), rng)))
        noisy = evaluate(noisy_docs, args.verbose, label="noisy ")
        show(f"simulated OCR noise, {args.noise_seeds} seeds", noisy)
        out["ocr_noise"] = noisy
        if args.harsh:
            harsh_docs = [(t, ocr_noise(doc_text(t), random.Random(f"{t['id']}:harsh:{seed}"), drop_rate=0.01,
                                        junk_rate=0.1))
                          for seed in range(args.noise_seeds) for t in truths]
            harsh = evaluate(harsh_docs, args.verbose, label="harsh ")
            show(f"harsh simulated OCR noise (characters lost, debris), {args.noise_seeds} seeds", harsh)
            out["ocr_noise_harsh"] = harsh
    if args.ocr_json:
        ocr_docs = []
        for t in truths:
            stem = Path(t["file"]).stem
            for cand in (args.ocr_json / f"{t['id']}.json", args.ocr_json / f"{stem}.json"):
                if cand.exists():
                    js = json.loads(cand.read_text(encoding="utf-8"))
                    pages = js.get("pages") or (js.get("ocr") or {}).get("pages") or []
                    text = "\f".join((p.get("text") or "") for p in pages) if pages else (js.get("text") or "")
                    try:  # a record's pages (with line boxes) let the extractor use the layout
                        from schemas.record import Page
                        ocr_docs.append((t, text, [Page.model_validate(p) for p in pages]))
                    except Exception:  # noqa: BLE001 - plain {text} pages: text only
                        ocr_docs.append((t, text))
                    break
        if ocr_docs:
            real = evaluate(ocr_docs, args.verbose, label="ocr ")
            show(f"real OCR text from {args.ocr_json}", real)
            out["ocr_text"] = real
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
