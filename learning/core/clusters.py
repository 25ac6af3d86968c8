"""Near-duplicate clusters: exact duplicates, near duplicates and paraphrases, assigned incrementally.

Abuse comes in campaigns (one template sent ten thousand times with a changed number), so the queue serves one
item per cluster and a decision on the representative can cover the rest. This module decides the clusters;
it knows nothing of Django (the worker service, learning/services/clusters.py, feeds it and stores the result).

The rule, one item at a time in arrival order (id order), each compared only with the *representatives* so far:

1. **exact**: its normalised text (``normalise_text``: NFKC, case-folded, URLs, e-mail addresses and digit runs
   replaced by placeholders, punctuation dropped, whitespace collapsed) hashes to a representative's key;
   similarity 1.0.
2. **near**: MinHash (datasketch, word uni- and bigrams of the normalised text) finds representatives through
   LSH; the best whose estimated Jaccard similarity reaches ``jaccard_threshold`` wins.
3. **paraphrase**: the item's embedding has cosine similarity at least ``cosine_threshold`` with a
   representative's. Candidates come from sign-random-projection buckets (``cosine_tables`` tables of
   ``cosine_bits`` hyperplanes each), then the exact cosine decides: no O(pool) scan per item, at the cost of
   an approximate recall (a pair at cosine 0.95 collides in at least one table with probability about 0.9
   at the defaults).
4. otherwise it founds a cluster and becomes its representative.

Clusters are stars: a member always points at its representative, never at another member, so a chain of small
edits cannot drift a cluster from its template. The outcome depends only on the items, their order and
``random_state`` (it seeds the MinHash permutations and the hyperplanes): the same input gives the same clusters
in every process, so an index rebuilt from stored signatures (``ClusterIndex.add_representative``) continues
exactly where the last run stopped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
from datasketch import MinHash

Kind = Literal["representative", "exact", "near", "paraphrase"]

DEFAULT_NUM_PERM = 64
DEFAULT_JACCARD_THRESHOLD = 0.6
DEFAULT_COSINE_THRESHOLD = 0.92
DEFAULT_COSINE_BITS = 12
DEFAULT_COSINE_TABLES = 12

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^\w]+")


def normalise_text(text: str) -> str:
    """The text as duplicates share it: a changed phone number, link, case or punctuation does not count."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _URL.sub(" url ", folded)
    folded = _EMAIL.sub(" email ", folded)
    folded = _DIGITS.sub("0", folded)
    return " ".join(_NON_WORD.sub(" ", folded).replace("_", " ").split())


def exact_key(text: str) -> str:
    """The exact-duplicate key: 128-bit BLAKE2b of the normalised text, hex. Shareable: it reveals no text."""
    return hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=16).hexdigest()


def _shingles(normalised: str) -> list[bytes]:
    words = normalised.split()
    grams = words + [f"{a} {b}" for a, b in pairwise(words)]
    return [gram.encode("utf-8") for gram in grams] or [b""]


def _crc32(data: bytes) -> int:
    # Deterministic across processes (Python's own hash() is salted per process) and fast (C).
    return zlib.crc32(data)


@dataclass(frozen=True, slots=True)
class Signature:
    """What clustering (and a match bank) keeps of a text: its exact key and its MinHash values."""

    exact_key: str
    minhash: np.ndarray  # uint32, num_perm values

    def to_bytes(self) -> bytes:
        return np.asarray(self.minhash, dtype="<u4").tobytes()


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one item went: its representative (itself when it founded the cluster), how, and how similar."""

    item_id: int
    representative_id: int
    kind: Kind
    similarity: float
    signature: Signature


class _Rows:
    """A growing uint32 matrix (one MinHash per row) that doubles its capacity instead of copying per row."""

    def __init__(self, width: int) -> None:
        self.data = np.zeros((1024, width), dtype=np.uint32)
        self.n = 0

    def append(self, row: np.ndarray) -> int:
        if self.n == self.data.shape[0]:
            grown = np.zeros((self.n * 2, self.data.shape[1]), dtype=np.uint32)
            grown[: self.n] = self.data
            self.data = grown
        self.data[self.n] = row
        self.n += 1
        return self.n - 1


class _BandIndex:
    """MinHash LSH buckets in compact form: ``bands`` bands of ``rows`` values, each band hashed to 64 bits.

    datasketch's MinHashLSH keeps a Python set per bucket, about 300 bytes each: 16 bands at 1M representatives
    would be ~5 GB. Here every (band, key) -> first representative row lives in one sorted uint64 array (plus a
    small dict for the newest entries, merged in when it grows), ~12 bytes per entry. A bucket remembers only its
    first representative: representatives are mutually dissimilar (each founded its own cluster), so a second one
    sharing a band is rare, and the verification below picks the best of the candidates found anyway.
    """

    MERGE_AT = 65_536

    def __init__(self, bands: int, rows: int) -> None:
        self.bands = bands
        self.rows = rows
        rng = np.random.default_rng(0x51F7)
        self._mix = (rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1))
        self._salt = rng.integers(1, 2**63, size=bands, dtype=np.uint64)
        self._keys = np.zeros(0, dtype=np.uint64)
        self._rows = np.zeros(0, dtype=np.int32)
        self._delta: dict[int, int] = {}

    def keys(self, minhash: np.ndarray) -> np.ndarray:
        bands = minhash[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            mixed: np.ndarray = (bands * self._mix).sum(axis=1, dtype=np.uint64) ^ self._salt
        return mixed

    def query(self, keys: np.ndarray) -> set[int]:
        found = {self._delta[k] for k in keys.tolist() if k in self._delta}
        if self._keys.size:
            at = np.searchsorted(self._keys, keys)
            at[at == self._keys.size] = 0
            hit = self._keys[at] == keys
            found.update(self._rows[at[hit]].tolist())
        return found

    def insert(self, keys: np.ndarray, row: int) -> None:
        for key in keys.tolist():
            self._delta.setdefault(key, row)
        if len(self._delta) >= self.MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        new_keys = np.fromiter(self._delta.keys(), dtype=np.uint64, count=len(self._delta))
        new_rows = np.fromiter(self._delta.values(), dtype=np.int32, count=len(self._delta))
        if self._keys.size:
            # A key already stored keeps its older (first) representative.
            at = np.searchsorted(self._keys, new_keys)
            at[at == self._keys.size] = 0
            fresh = self._keys[at] != new_keys
            new_keys, new_rows = new_keys[fresh], new_rows[fresh]
        keys = np.concatenate([self._keys, new_keys])
        order = np.argsort(keys, kind="stable")
        self._keys, self._rows = keys[order], np.concatenate([self._rows, new_rows])[order]
        self._delta = {}

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._rows.nbytes)


def _bands_for(num_perm: int) -> tuple[int, int]:
    """Bands of 4 values: a pair at Jaccard 0.6 shares at least one band with probability ~0.9 at 64 values."""
    rows = 4
    return max(2, num_perm // rows), rows


class ClusterIndex:
    """The representatives seen so far, searchable three ways; ``assign`` clusters new items incrementally.

    Parameters follow scikit-learn's convention: stored by ``__init__``, learned state ends in ``_``.
    """

    def __init__(self, *, num_perm: int = DEFAULT_NUM_PERM, jaccard_threshold: float = DEFAULT_JACCARD_THRESHOLD,
                 cosine_threshold: float = DEFAULT_COSINE_THRESHOLD, cosine_bits: int = DEFAULT_COSINE_BITS,
                 cosine_tables: int = DEFAULT_COSINE_TABLES, random_state: int = 0) -> None:
        self.num_perm = num_perm
        self.jaccard_threshold = jaccard_threshold
        self.cosine_threshold = cosine_threshold
        self.cosine_bits = cosine_bits
        self.cosine_tables = cosine_tables
        self.random_state = random_state
        self._prototype = MinHash(num_perm=num_perm, seed=random_state, hashfunc=_crc32)
        self.bands_ = _BandIndex(*_bands_for(num_perm))
        self.exact_: dict[str, int] = {}
        self.minhashes_ = _Rows(num_perm)
        self.ids_: list[int] = []
        self.vectors_: dict[int, np.ndarray] = {}
        self.hyperplanes_: np.ndarray | None = None
        self.buckets_: list[dict[int, list[int]]] = [{} for _ in range(cosine_tables)]

    # -- signatures ---------------------------------------------------------------------------------------------

    def signature(self, text: str) -> Signature:
        normalised = normalise_text(text)
        minhash = MinHash(num_perm=self.num_perm, hashfunc=_crc32, permutations=self._prototype.permutations,
                          scheme=self._prototype.scheme)
        minhash.update_batch(_shingles(normalised))
        key = hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).hexdigest()
        return Signature(exact_key=key, minhash=minhash.hashvalues.astype(np.uint32))

    def signature_from_bytes(self, key: str, blob: bytes) -> Signature:
        values = np.frombuffer(blob, dtype="<u4").astype(np.uint32)
        if values.shape[0] != self.num_perm:
            raise ValueError(f"a stored signature has {values.shape[0]} values, this index uses {self.num_perm}")
        return Signature(exact_key=key, minhash=values)

    # -- the paraphrase buckets ----------------------------------------------------------------------------------

    def _codes(self, vector: np.ndarray) -> list[int]:
        if self.hyperplanes_ is None:
            rng = np.random.default_rng(self.random_state)
            self.hyperplanes_ = rng.standard_normal((self.cosine_tables * self.cosine_bits, vector.shape[0]))
        bits = (self.hyperplanes_ @ vector > 0).reshape(self.cosine_tables, self.cosine_bits)
        weights = 1 << np.arange(self.cosine_bits)
        return [int(code) for code in bits @ weights]

    @staticmethod
    def _unit(vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    # -- building ------------------------------------------------------------------------------------------------

    def add_representative(self, item_id: int, signature: Signature, vector: np.ndarray | None = None) -> None:
        """Make ``item_id`` searchable as a representative (a new cluster, or one loaded from storage)."""
        self.exact_.setdefault(signature.exact_key, item_id)
        row = self.minhashes_.append(signature.minhash)
        self.ids_.append(item_id)
        self.bands_.insert(self.bands_.keys(signature.minhash), row)
        if vector is not None:
            unit = self._unit(vector)
            self.vectors_[item_id] = unit
            for table, code in enumerate(self._codes(unit)):
                self.buckets_[table].setdefault(code, []).append(item_id)

    def match(self, signature: Signature, vector: np.ndarray | None = None) -> tuple[int, Kind, float] | None:
        """The representative this signature (and vector) belongs with, how, and how similar; None: a new one."""
        found = self.exact_.get(signature.exact_key)
        if found is not None:
            return found, "exact", 1.0
        rows = sorted(self.bands_.query(self.bands_.keys(signature.minhash)))
        if rows:
            # Estimated Jaccard similarity: the share of equal MinHash values. The first of equals (the oldest
            # representative) wins, so the outcome never depends on set order.
            similarities = (self.minhashes_.data[rows] == signature.minhash).mean(axis=1)
            top = int(np.argmax(similarities))
            if float(similarities[top]) >= self.jaccard_threshold:
                return self.ids_[rows[top]], "near", round(float(similarities[top]), 4)
        if vector is None or not self.vectors_:
            return None
        unit = self._unit(vector)
        candidates = sorted({rep for table, code in enumerate(self._codes(unit))
                             for rep in self.buckets_[table].get(code, ())})
        if not candidates:
            return None
        sims = np.stack([self.vectors_[rep] for rep in candidates]) @ unit
        top = int(np.argmax(sims))  # the first of equals: the oldest representative, deterministically
        if float(sims[top]) >= self.cosine_threshold:
            return candidates[top], "paraphrase", round(float(sims[top]), 4)
        return None

    def assign(self, item_ids: Sequence[int], texts: Sequence[str],
               vectors: np.ndarray | Sequence[np.ndarray | None] | None = None) -> list[Assignment]:
        """Cluster new items, in the order given (give them in id order), against everything added before."""
        if len(item_ids) != len(texts) or (vectors is not None and len(vectors) != len(item_ids)):
            raise ValueError("item_ids, texts and vectors must have the same length")
        out: list[Assignment] = []
        for n, (item_id, text) in enumerate(zip(item_ids, texts, strict=True)):
            vector = None if vectors is None else vectors[n]
            signature = self.signature(text)
            found = self.match(signature, vector)
            if found is None:
                self.add_representative(item_id, signature, vector)
                out.append(Assignment(item_id=item_id, representative_id=item_id, kind="representative",
                                      similarity=1.0, signature=signature))
            else:
                out.append(Assignment(item_id=item_id, representative_id=found[0], kind=found[1],
                                      similarity=found[2], signature=signature))
        return out

    @property
    def n_representatives(self) -> int:
        return len(self.ids_)

    @property
    def nbytes(self) -> int:
        """The index's arrays (MinHash rows, bands, vectors), without Python's per-object overhead."""
        return int(self.minhashes_.data.nbytes + self.bands_.nbytes
                   + sum(v.nbytes for v in self.vectors_.values()))
