"""File names as they arrive: any bytes, any length, shown to people faithfully, never colliding.

Linux keeps a file name as bytes. Python shows bytes that are not UTF-8 as lone
surrogates ("surrogateescape"), which cannot be written to JSON, SQLite or the
Prefect API. Old Windows file servers write Shift_JIS (cp932) names, so such names
are normal in a municipal inbox, not an error. This module is the one place that
turns a name on disk into:

- a name for people (`display_name`): UTF-8 if it is, else cp932, else the
  undecodable bytes escaped; always NFC, so 「が」 typed on a Mac matches 「が」 typed
  on Windows;
- the exact bytes, base64, when they differ from that name's UTF-8 (`name_bytes_b64`),
  so the record can say what was on disk;
- a name that fits NAME_MAX (255 bytes) with room for a suffix (`fit_name`),
  shortened with a hash so that two long names never become one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import unicodedata
from pathlib import Path

NAME_MAX = 255  # bytes, on every Linux file system kiroku runs on
_PATH_PREFIX = "kiroku-b64:"


def name_bytes(name: str) -> bytes:
    """The bytes of a name as the file system holds them."""
    return os.fsencode(name)


def display_name(name: str | bytes) -> str:
    """The name as a person reads it: UTF-8, else cp932 (Shift_JIS), else escaped; NFC."""
    raw = name if isinstance(name, bytes) else name_bytes(name)
    for encoding in ("utf-8", "cp932"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "cp932" and any(unicodedata.category(c) in ("Co", "Cc") for c in text):
            continue  # Python's cp932 maps stray bytes (0xFD-0xFF) to private-use characters: not a name
        return unicodedata.normalize("NFC", text)
    return unicodedata.normalize("NFC", raw.decode("utf-8", errors="backslashreplace"))


def display_path(path: Path | str) -> str:
    """A whole path for people: each part decoded on its own (a UTF-8 folder may hold a Shift_JIS file)."""
    text = os.fspath(path)
    return "/".join(display_name(part) if part else "" for part in text.split("/"))


_SURROGATES = re.compile("[\udc80-\udcff]+")


def readable(text: str) -> str:
    """Any message, safe for JSON, SQLite and a reason file: a raw name inside it (lone
    surrogates, e.g. a Shift_JIS file name in an exception message) is decoded as
    display_name would."""
    return _SURROGATES.sub(lambda m: display_name(os.fsencode(m.group())), text)


def name_bytes_b64(name: str | bytes) -> str | None:
    """base64 of the name's bytes on disk, or None when they are just the UTF-8 of display_name."""
    raw = name if isinstance(name, bytes) else name_bytes(name)
    if raw == display_name(raw).encode("utf-8"):
        return None
    return base64.b64encode(raw).decode("ascii")


def is_plain_utf8(name: str) -> bool:
    """Whether the name can be written as it is to JSON, SQLite or an API."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fit_name(name: str, *, reserve: int = 0) -> str:
    """The name, or a shortened form of it, whose bytes plus `reserve` bytes fit NAME_MAX.

    The suffix (extension) is kept, the stem is cut on a character boundary and an
    8-hex-digit hash of the whole original name is added, so two long names that
    share their first 200 bytes still get different short names.
    """
    limit = NAME_MAX - reserve
    if len(name_bytes(name)) <= limit:
        return name
    stem, suffix = os.path.splitext(name)
    if len(name_bytes(suffix)) > 32:  # not a real extension, just a dot in a long name
        stem, suffix = name, ""
    tag = "~" + hashlib.sha256(name_bytes(name)).hexdigest()[:8]
    room = limit - len(name_bytes(suffix)) - len(tag)
    cut = stem
    while cut and len(name_bytes(cut)) > room:
        cut = cut[:-1]
    return f"{cut}{tag}{suffix}"


def encode_path(path: Path | str) -> str:
    """A path as a string any API accepts: unchanged when it is UTF-8, else base64 of its bytes.

    Flow parameters travel as JSON to the Prefect server, which refuses lone surrogates;
    `decode_path` gives back the exact path on the other side.
    """
    text = os.fspath(path)
    if is_plain_utf8(text):
        return text
    return _PATH_PREFIX + base64.urlsafe_b64encode(os.fsencode(text)).decode("ascii")


def decode_path(text: str) -> Path:
    """The path `encode_path` was given."""
    if text.startswith(_PATH_PREFIX):
        return Path(os.fsdecode(base64.urlsafe_b64decode(text[len(_PATH_PREFIX):])))
    return Path(text)
