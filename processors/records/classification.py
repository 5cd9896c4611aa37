"""Confidentiality class (機密性) of a record, from a policy that is data.

Who may open an archived record, and whether it may leave the closed network, follows
from its class. The classes and the rules that assign them belong to each municipality's
security policy, so they live in schemas/classification.yaml (2024 guideline classes
機密性3A/3B/3C/2/1 by default) and this module only evaluates them: a record gets the
strictest class of all matching rules, or the policy's default.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from processors.records.yamldata import read_yaml
from schemas.record import Metadata, PersonalData

__all__ = ["PolicyError", "Policy", "PolicyRule", "POLICY_PATH", "parse_policy", "load_policy", "classify"]

POLICY_PATH = Path(__file__).resolve().parents[2] / "schemas" / "classification.yaml"
PII_TYPES = ("my_number", "phone", "birth_date", "address", "person_name")


class PolicyError(ValueError):
    """The classification policy is not usable; the message names the bad entry."""


@dataclass(frozen=True)
class PolicyRule:
    name: str
    klass: str
    pii_types: frozenset[str] = frozenset()
    any_pii: bool | None = None
    document_types: frozenset[str] = frozenset()
    title_keywords: tuple[str, ...] = ()

    def matches(self, pii: list[PersonalData], metadata: Metadata | None) -> bool:
        if self.pii_types and not any(p.type in self.pii_types for p in pii):
            return False
        if self.any_pii is not None and bool(pii) != self.any_pii:
            return False
        doc_type = metadata.document_type if metadata else None
        if self.document_types and doc_type not in self.document_types:
            return False
        if self.title_keywords:
            title = unicodedata.normalize("NFKC", (metadata.title if metadata else None) or "")
            title = "".join(title.split())
            if not any(k in title for k in self.title_keywords):
                return False
        return True


@dataclass(frozen=True)
class Policy:
    classes: tuple[str, ...]  # strictest first
    default: str
    rules: tuple[PolicyRule, ...]
    descriptions: dict[str, str]

    def rank(self, klass: str) -> int:
        return self.classes.index(klass)


def _str_list(where: str, key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise PolicyError(f"{where}: {key} must be a non-empty list of strings, got {v!r}")
    return v


def parse_policy(data: Any, source: str = "<data>") -> Policy:
    """Validate a policy mapping (as loaded from YAML); errors name the entry."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping with classes, default and rules")
    unknown = set(data) - {"version", "classes", "default", "rules"}
    if unknown:
        raise PolicyError(f"{source}: unknown top-level keys {sorted(unknown)}")
    raw_classes = data.get("classes")
    if not isinstance(raw_classes, list) or not raw_classes:
        raise PolicyError(f"{source}: 'classes' must be a non-empty list, strictest first")
    classes: list[str] = []
    desc: dict[str, str] = {}
    for i, c in enumerate(raw_classes):
        name = c.get("name") if isinstance(c, dict) else c
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{source}: classes[{i}] has no name")
        if name in classes:
            raise PolicyError(f"{source}: classes[{i}] ({name}) is listed twice")
        classes.append(name)
        if isinstance(c, dict) and c.get("description"):
            desc[name] = str(c["description"])
    default = data.get("default")
    if default not in classes:
        raise PolicyError(f"{source}: default {default!r} is not one of the classes {classes}")
    rules: list[PolicyRule] = []
    for i, r in enumerate(data.get("rules") or []):
        where = f"{source}: rules[{i}]"
        if not isinstance(r, dict):
            raise PolicyError(f"{where}: expected a mapping with name, when and class")
        name = str(r.get("name") or f"rule {i}")
        where = f"{source}: rules[{i}] ({name})"
        extra = set(r) - {"name", "when", "class"}
        if extra:
            raise PolicyError(f"{where}: unknown keys {sorted(extra)}")
        klass = r.get("class")
        if klass not in classes:
            raise PolicyError(f"{where}: class {klass!r} is not one of {classes}")
        when = r.get("when")
        if not isinstance(when, dict) or not when:
            raise PolicyError(f"{where}: 'when' must be a mapping with at least one test")
        bad = set(when) - {"pii_types", "any_pii", "document_types", "title_keywords"}
        if bad:
            raise PolicyError(f"{where}: unknown tests {sorted(bad)} (allowed: pii_types, any_pii, "
                              "document_types, title_keywords)")
        pii_types = frozenset(_str_list(where, "pii_types", when["pii_types"])) if "pii_types" in when else frozenset()
        if pii_types - set(PII_TYPES):
            raise PolicyError(f"{where}: unknown pii types {sorted(pii_types - set(PII_TYPES))} (known: {PII_TYPES})")
        any_pii = when.get("any_pii")
        if any_pii is not None and not isinstance(any_pii, bool):
            raise PolicyError(f"{where}: any_pii must be true or false")
        doc_types = frozenset(_str_list(where, "document_types", when["document_types"])) \
            if "document_types" in when else frozenset()
        keywords = tuple(unicodedata.normalize("NFKC", k) for k in _str_list(where, "title_keywords", when["title_keywords"])) \
            if "title_keywords" in when else ()
        rules.append(PolicyRule(name, klass, pii_types, any_pii, doc_types, keywords))
    return Policy(tuple(classes), default, tuple(rules), desc)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Policy:
    return parse_policy(read_yaml(Path(path), PolicyError, "classification policy"), path)


def load_policy(path: str | Path | None = None) -> Policy:
    """The classification policy (default schemas/classification.yaml), validated."""
    return _load_cached(str(Path(path) if path else POLICY_PATH))


def classify(pii: Iterable[PersonalData], metadata: Metadata | None = None, policy: Policy | None = None) -> str:
    """The strictest class among the matching rules, else the policy default.

    ``pii`` is the *private* personal data of the record (Record.pii); officials' names
    and office phones must not be passed, or every letter would look personal.
    """
    pol = policy or load_policy()
    items = list(pii)
    best = pol.default
    for rule in pol.rules:
        if rule.matches(items, metadata) and pol.rank(rule.klass) < pol.rank(best):
            best = rule.klass
    return best
