"""The instruction templates of the synthetic requests (``templates.yaml``) and their train/test split.

A template is one phrasing of an ask ("Is this review positive or negative? {payload}") with slots for
the payload, labels and entity types. About a quarter of each group of templates is held out for the test
split, so the evaluation reads phrasings the models never trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import yaml


TEMPLATES_PATH = Path(__file__).resolve().parent / "templates.yaml"


TEST_SHARE = 0.25


BARE = "bare"


_SLOT = re.compile(r"\{\{|\}\}|\{(\w+)\}|\[\[([A-Z]+):([^\]]+)\]\]")


@dataclass(frozen=True)
class Template:
    """One template: ``family`` is the task it asks for (or "persona"), ``mode`` where its parts go."""

    id: str
    family: str
    mode: str
    text: str

    @property
    def pieces(self) -> tuple[tuple[str, ...], ...]:
        """``("lit", text)``, ``("slot", name)`` and ``("type", TYPE, phrase)`` in order."""
        return _pieces(self.text)

    @property
    def slots(self) -> frozenset[str]:
        """The ``{name}`` slots the template uses."""
        return frozenset(p[1] for p in self.pieces if p[0] == "slot")

    @property
    def fixed_types(self) -> tuple[str, ...]:
        """The entity types the template names in fixed words (``[[PER:who]]``)."""
        return tuple(p[1] for p in self.pieces if p[0] == "type")

    @property
    def group(self) -> tuple[str, str, str]:
        """The stratum the test share is drawn from: family, mode and what the template names."""
        kind = "labels" if "labels" in self.slots else "types" if "types" in self.slots or self.fixed_types else "plain"
        return self.family, self.mode, kind


@lru_cache(maxsize=None)
def _pieces(text: str) -> tuple[tuple[str, ...], ...]:
    out: list[tuple[str, ...]] = []
    pos = 0
    for m in _SLOT.finditer(text):
        if m.start() > pos:
            out.append(("lit", text[pos:m.start()]))
        if m.group(0) in ("{{", "}}"):
            out.append(("lit", m.group(0)[0]))
        elif m.group(1):
            out.append(("slot", m.group(1)))
        else:
            out.append(("type", m.group(2), m.group(3)))
        pos = m.end()
    if pos < len(text):
        out.append(("lit", text[pos:]))
    merged: list[tuple[str, ...]] = []
    for p in out:
        if p[0] == "lit" and merged and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + p[1])
        else:
            merged.append(p)
    return tuple(merged)


def normalise_template(text: str) -> str:
    """A template's wording without case, punctuation or spacing: two templates that differ only there
    are one template (a test template may not have such a near-copy in train)."""
    return " ".join(re.sub(r"[^\w{}\[\]]+", " ", text.lower()).split())


@lru_cache(maxsize=None)
def vocabulary() -> dict:
    """The template file: templates plus the label, type, noun and filler vocabularies."""
    return yaml.safe_load(TEMPLATES_PATH.read_text())


@lru_cache(maxsize=None)
def templates() -> dict[str, Template]:
    """Every template by id, checked for unique ids, known slots and no near-copies."""
    out: dict[str, Template] = {}
    seen: dict[str, str] = {}
    fillers = set(vocabulary()["fillers"])
    known = {"payload", "labels", "types", "noun", "Noun", "prompt"} | fillers
    for family, modes in vocabulary()["templates"].items():
        for mode, items in modes.items():
            for tid, text in items.items():
                if tid in out or tid == BARE:
                    raise ValueError(f"duplicate template id {tid}")
                t = Template(tid, family, mode, text)
                if unknown := t.slots - known:
                    raise ValueError(f"template {tid} has unknown slots {sorted(unknown)}")
                key = normalise_template(text)
                if key in seen:
                    raise ValueError(f"templates {seen[key]} and {tid} differ only by case or punctuation")
                seen[key] = tid
                out[tid] = t
    return out


@lru_cache(maxsize=None)
def template_split() -> Mapping[str, str]:
    """Template id → "train" or "test": in each (family, mode, slot kind) group, the quarter of ids with
    the smallest SHA-1 is held out for test. ``bare`` (no wrapper) is listed as train; every split uses
    it. Read-only: every caller shares it."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for t in templates().values():
        groups[t.group].append(t.id)
    split = {BARE: "train"}
    for ids in groups.values():
        ids.sort(key=lambda i: hashlib.sha1(i.encode()).hexdigest())
        n_test = round(len(ids) * TEST_SHARE) if len(ids) > 1 else 0
        for k, tid in enumerate(ids):
            split[tid] = "test" if k < n_test else "train"
    return MappingProxyType(split)
