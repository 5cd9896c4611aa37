"""The `kiroku` command as a records officer runs it: help everywhere, extract, configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KIROKU = str(Path(sys.executable).with_name("kiroku"))
LETTER = ("新総第1234号\n令和7年12月9日\n各課長　様\n新潟市総務部長\n"
          "庁舎における節電の取組について（通知）\n　標記について、下記のとおり通知します。\n")


def _run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KIROKU, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.mark.parametrize("command", [
    [], ["process"], ["ingest"], ["watch"], ["search"], ["show"], ["get"], ["extract"], ["worker"], ["run"],
    ["services"], ["services", "up"], ["services", "down"], ["services", "status"],
    ["retention"], ["retention", "due"], ["retention", "extend"], ["register"], ["register", "export"],
])
def test_every_command_has_help(command: list[str]) -> None:
    run = _run(*command, "--help")
    assert run.returncode == 0, run.stderr
    assert "Usage" in run.stdout


def test_extract_reads_a_letter_and_its_retention(tmp_path: Path) -> None:
    text = tmp_path / "letter.txt"
    text.write_text(LETTER, encoding="utf-8")
    out = json.loads(_run("extract", str(text), "--json", cwd=tmp_path).stdout)
    md = out["metadata"]
    assert md["document_type"] == "通知"
    assert md["document_number"] == "新総第1234号"
    assert md["document_date"] == "2025-12-09" and md["fiscal_year"] == 2025
    assert md["evidence"]["document_date"]["line"] == 1
    ret = out["retention"]
    assert (ret["period"], ret["disposition"], ret["start_date"], ret["expiry_date"]) == \
        ("3年", "廃棄", "2026-04-01", "2029-03-31")


def test_the_start_date_rule_is_the_municipalitys_choice(tmp_path: Path) -> None:
    text = tmp_path / "letter.txt"
    text.write_text(LETTER, encoding="utf-8")
    config = tmp_path / "kiroku.toml"
    config.write_text('[retention]\nretention_start_rule = "calendar"\n', encoding="utf-8")
    out = json.loads(_run("extract", str(text), "--json", env={"KIROKU_CONFIG": str(config)}, cwd=tmp_path).stdout)
    assert (out["retention"]["start_date"], out["retention"]["expiry_date"]) == ("2026-01-01", "2028-12-31")


def test_an_unknown_setting_is_refused_clearly(tmp_path: Path) -> None:
    config = tmp_path / "kiroku.toml"
    config.write_text('[storage]\nbukcet = "typo"\n', encoding="utf-8")
    run = _run("search", "契約", env={"KIROKU_CONFIG": str(config)}, cwd=tmp_path)
    assert run.returncode != 0
    assert "bukcet" in run.stderr
