"""Honest splits for the router's training and evaluation data.

Public routing sets overlap: the same benchmark question appears in several sources, and templated rows come
with prefixed copies ("Answer the following question: ..."). A random split then tests on rows the router
trained on. Here rows are deduplicated across sources first (exact after normalising, and near duplicates by
MinHash over word shingles, confirmed by containment so that a prefixed copy joins its original; shingles
most rows share, a set's boilerplate, do not count), every row joins the group of its source item or
template, and whole groups go to one side of the split. :func:`leak_check` reports what still crosses, and
the tests plant a duplicate to see it fail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

SHINGLE_WORDS = 5
NUM_PERM = 128
# LSH finds candidates at this Jaccard similarity; a candidate is a duplicate when its shingles overlap
# the smaller text's by at least CONTAINMENT (a prefixed copy contains its original whole).
CANDIDATE_JACCARD = 0.5
CONTAINMENT = 0.8
# In a set of at least BOILERPLATE_MIN_ROWS rows, a shingle found in more than BOILERPLATE_SHARE of them is
# the set's boilerplate (a few-shot preamble, an instruction every row repeats), not a sign of a copy.
BOILERPLATE_MIN_ROWS = 40
BOILERPLATE_SHARE = 0.05


@dataclass(frozen=True)
class Row:
    """One prompt with where it came from: ``group`` ties rows that must stay together (a source item's
    turns, a template's instances); empty means the row is its own group."""

    text: str
    source: str
    group: str = ""


@dataclass
class LeakReport:
    """Test rows whose text (exactly, after normalising) or near duplicate is in train, and how many."""

    exact: list[int]
    near: list[int]

    @property
    def leaks(self) -> int:
        """Test rows that leak."""
        return len(set(self.exact) | set(self.near))

    def as_dict(self) -> dict:
        """Counts for a report."""
        return {"exact": len(self.exact), "near": len(self.near), "leaking_test_rows": self.leaks}


def normalise(text: str) -> str:
    """Lower case, words only, single spaces: what two copies of one prompt share."""
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str) -> set[str]:
    """Word 5-grams of the normalised text (the text itself when shorter)."""
    words = normalise(text).split()
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words)}
    return {" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def content_shingles(texts: Sequence[str]) -> list[set[str]]:
    """Each text's shingles less the set's boilerplate ones, so rows that share only a template are not
    taken for copies (a text that is all boilerplate keeps its own shingles)."""
    sets = [shingles(t) for t in texts]
    if len(sets) < BOILERPLATE_MIN_ROWS:
        return sets
    counts: dict[str, int] = {}
    for s in sets:
        for sh in s:
            counts[sh] = counts.get(sh, 0) + 1
    limit = BOILERPLATE_SHARE * len(sets)
    return [{sh for sh in s if counts[sh] <= limit} or s for s in sets]


def _minhash(sh: set[str]) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch([s.encode() for s in sh])
    return m


def _contained(a: set[str], b: set[str]) -> bool:
    return len(a & b) >= CONTAINMENT * min(len(a), len(b))


class _Groups:
    """Union-find over row indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def duplicate_clusters(rows: Sequence[Row]) -> list[int]:
    """For each row, a cluster id: rows with the same normalised text, near duplicates, and rows of the
    same declared group share one."""
    groups = _Groups(len(rows))
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        for key in (f"text:{normalise(row.text)}", f"group:{row.source}:{row.group}" if row.group else None):
            if key is None:
                continue
            if key in first:
                groups.union(i, first[key])
            else:
                first[key] = i
    sets = content_shingles([r.text for r in rows])
    lsh = MinHashLSH(threshold=CANDIDATE_JACCARD, num_perm=NUM_PERM)
    hashes = [_minhash(s) for s in sets]
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if _contained(sets[i], sets[j]):
                groups.union(i, j)
        lsh.insert(i, m)
    return [groups.find(i) for i in range(len(rows))]


def group_split(rows: Sequence[Row], test_share: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of train and test rows: whole duplicate clusters go to one side, chosen by a seeded hash of
    the cluster's smallest text, so the split is the same on every machine and in any row order."""
    clusters = duplicate_clusters(rows)
    anchor: dict[int, str] = {}
    for i, c in enumerate(clusters):
        text = normalise(rows[i].text)
        anchor[c] = min(anchor.get(c, text), text)
    train, test = [], []
    for i, c in enumerate(clusters):
        digest = hashlib.sha256(f"{seed}:{anchor[c]}".encode()).digest()
        (test if int.from_bytes(digest[:8], "big") / 2**64 < test_share else train).append(i)
    return train, test


def leak_check(train: Sequence[str], test: Sequence[str]) -> LeakReport:
    """Test rows that also appear in train: exactly (normalised) or as a near duplicate (MinHash candidates
    confirmed by shingle containment)."""
    seen = {normalise(t) for t in train}
    exact = [i for i, t in enumerate(test) if normalise(t) in seen]
    sets = content_shingles(list(train) + list(test))
    train_sets, test_sets = sets[:len(train)], sets[len(train):]
    lsh = MinHashLSH(threshold=CANDIDATE_JACCARD, num_perm=NUM_PERM)
    for k, s in enumerate(train_sets):
        lsh.insert(k, _minhash(s))
    near = [i for i, s in enumerate(test_sets)
            if i not in exact and any(_contained(s, train_sets[k]) for k in lsh.query(_minhash(s)))]
    return LeakReport(exact, near)
