"""The record model and its exported JSON Schema, and `kiroku process` output against it."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.record import SCHEMA_PATH, Record

def test_exported_schema_matches_the_model() -> None:
    """The JSON Schema in git is what the model says (regenerate with `python -m schemas.record`)."""
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == Record.model_json_schema()


def test_schema_rejects_a_record_without_source() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x"}, schema)
