"""The record model and its exported JSON Schema, and `kiroku process` output against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from schemas.record import SCHEMA_PATH, Record

ROOT = Path(__file__).resolve().parents[1]


def test_exported_schema_matches_the_model() -> None:
    """The JSON Schema in git is what the model says (regenerate with `python -m schemas.record`)."""
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == Record.model_json_schema()


def test_schema_rejects_a_record_without_source() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x"}, schema)


@pytest.mark.slow
def test_process_over_the_samples_writes_valid_records(shared: Path, tmp_path: Path) -> None:
    samples = sorted(p for p in (shared / "samples").iterdir()
                     if p.suffix in {".png", ".jpg", ".tif", ".pdf"})
    assert samples
    out = tmp_path / "out"
    kiroku = Path(sys.executable).with_name("kiroku")
    run = subprocess.run([str(kiroku), "process", *map(str, samples), "--out", str(out)],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for sample in samples:
        data = json.loads((out / f"{sample.stem}.json").read_text(encoding="utf-8"))
        jsonschema.validate(data, schema)
        truth = json.loads((shared / "samples" / f"{sample.stem}.truth.json").read_text(encoding="utf-8"))
        assert len(data["pages"]) == len(truth["pages"])
        assert data["text"].strip(), sample.name
        assert (out / f"{sample.stem}.pdf").stat().st_size > 0
