"""Reading the municipality-editable data files (schedule, policy, document types) from YAML.

Each is edited by hand by a records officer, so a file that cannot be read or is not
YAML must fail with a message naming the file, in the error type of the file's kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path, error: type[Exception], what: str) -> Any:
    """The parsed YAML of `path`, or `error` saying which file (the `what`) was unreadable and why."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
