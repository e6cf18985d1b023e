"""FAQ retrieval on the shared embedding: cosine similarity to every phrasing of every entry.

An index built from a file follows it: on use, at most once per :data:`CHECK_INTERVAL_S`, it looks at the
file's modification time and, when the file changed, loads and embeds it again and swaps the new index in
whole. A file that fails to load keeps the old index in service and logs why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

log = logging.getLogger(__name__)

# How often, at most, a file-backed index looks at its file.
CHECK_INTERVAL_S = 1.0

Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class FaqEntry:
    """One FAQ entry with all the phrasings it is matched by."""

    id: str
    question: str
    answer: str
    phrasings: tuple[str, ...]


@dataclass(frozen=True)
class FaqMatch:
    """The best entry for a query, its cosine score and the phrasing that scored it."""

    entry: FaqEntry
    score: float
    phrasing: str


def load_faq(path: Path) -> list[FaqEntry]:
    """Read a FAQ YAML file (``entries: [{id, question, alternatives?, answer}]``), checking its shape."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping with `entries`")
    entries, seen = [], set()
    for i, raw in enumerate(data.get("entries") or []):
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: entries[{i}] must be a mapping")
        missing = [k for k in ("id", "question", "answer") if not raw.get(k)]
        if missing:
            raise ValueError(f"{path}: entries[{i}] lacks {', '.join(missing)}")
        alternatives = raw.get("alternatives") or []
        if not isinstance(alternatives, list) or not all(isinstance(a, str) and a.strip() for a in alternatives):
            raise ValueError(f"{path}: entries[{i}].alternatives must be a list of non-empty strings")
        if str(raw["id"]) in seen:
            raise ValueError(f"{path}: entries[{i}] repeats the id {raw['id']!r}")
        seen.add(str(raw["id"]))
        phrasings = (str(raw["question"]), *alternatives)
        entries.append(FaqEntry(str(raw["id"]), str(raw["question"]), str(raw["answer"]), phrasings))
    if not entries:
        raise ValueError(f"{path}: no FAQ entries")
    return entries


@dataclass(frozen=True)
class _Snapshot:
    """One immutable version of the index; swapping the whole object is what makes a reload atomic."""

    entries: list[FaqEntry]
    phrasings: list[str]
    owner: np.ndarray
    matrix: np.ndarray

    @classmethod
    def build(cls, entries: list[FaqEntry], embed: Embed) -> "_Snapshot":
        phrasings = [p for e in entries for p in e.phrasings]
        owner = np.array([i for i, e in enumerate(entries) for _ in e.phrasings])
        return cls(entries, phrasings, owner, embed(phrasings))


def _file_stamp(path: Path) -> tuple[int, int, int]:
    # Size and inode as well as the time: an edit within the file system's timestamp granularity, or a
    # file replaced by a rename, still shows.
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


class FaqIndex:
    """Embedded phrasings of a FAQ; ``embed`` maps texts to L2-normalised rows (the shared encoder).

    Built with ``path`` (as :meth:`from_file` does), the index reloads that file when it changes.
    """

    def __init__(self, entries: list[FaqEntry], embed: Embed, *, path: Path | None = None,
                 check_interval_s: float = CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._embed, self._path, self._interval, self._clock = embed, path, check_interval_s, clock
        self._stamp = _file_stamp(path) if path is not None else None
        self._next_check = clock() + check_interval_s
        self._reloading = threading.Lock()
        self._snapshot = _Snapshot.build(entries, embed)

    @classmethod
    def from_file(cls, path: Path, encoder, **kwargs) -> "FaqIndex":
        """Load a FAQ file and embed its phrasings with ``encoder`` (the shared :class:`Encoder`); the index
        reloads the file when it changes."""
        return cls.from_path(path, lambda texts: encoder.encode(texts).pooled, **kwargs)

    @classmethod
    def from_path(cls, path: Path, embed: Embed, **kwargs) -> "FaqIndex":
        """Load a FAQ file and embed its phrasings with ``embed``; the index reloads the file when it changes."""
        path = Path(path)
        return cls(load_faq(path), embed, path=path, **kwargs)

    @property
    def entries(self) -> list[FaqEntry]:
        """The entries in service."""
        return self._snapshot.entries

    def best(self, embeddings: np.ndarray) -> list[FaqMatch]:
        """Best entry for each query embedding (rows L2-normalised)."""
        self.reload_if_changed()
        snap = self._snapshot
        sims = embeddings @ snap.matrix.T
        best = sims.argmax(axis=1)
        return [FaqMatch(snap.entries[snap.owner[j]], float(sims[i, j]), snap.phrasings[j])
                for i, j in enumerate(best)]

    def reload_if_changed(self) -> bool:
        """Reload the file if it changed since it was last read (checked at most once per interval).

        Returns whether a new index went into service. Concurrent callers do not wait: one reloads, the
        others go on with the index in service.
        """
        if self._path is None or self._clock() < self._next_check:
            return False
        if not self._reloading.acquire(blocking=False):
            return False
        try:
            self._next_check = self._clock() + self._interval
            try:
                stamp = _file_stamp(self._path)
            except OSError as exc:
                log.error("FAQ %s: cannot read the file (%s); keeping the %d entries in service",
                          self._path, exc, len(self.entries))
                return False
            if stamp == self._stamp:
                return False
            # Whatever happens next, this version of the file has been tried: a broken file is reported
            # once, not every second, and the next edit is tried afresh.
            self._stamp = stamp
            try:
                snapshot = _Snapshot.build(load_faq(self._path), self._embed)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                log.error("FAQ %s: reload failed, keeping the %d entries in service: %s",
                          self._path, len(self.entries), exc)
                return False
            self._snapshot = snapshot
            log.info("FAQ %s: reloaded, %d entries", self._path, len(snapshot.entries))
            return True
        finally:
            self._reloading.release()
