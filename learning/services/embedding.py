"""Embedding: fill the (embedder, content hash) vector cache for a project's items, batch by batch.

Rerun-safety: every batch commits on its own, and a batch only ever looks for items whose hash has no vector
yet, so a run killed half-way leaves the finished batches in place and the next run continues with the rest.
Two runs racing on one text (two projects importing the same message) both insert with ON CONFLICT DO
NOTHING: one vector survives, nothing fails.

SPREADING ONE PROJECT OVER SEVERAL WORKERS
==========================================
A project's embed job is claimed by one run at a time (learning/jobs.py), so a run that embedded
everything itself would keep a second worker idle. When more than ``SIFT_EMBED_CHUNK`` items are pending, the
claimed run only lists the pending ids and sends one ``sift.learning.embed_items`` task per chunk of ids (the
``embedding`` queue), then releases its claim; every idle worker takes a chunk. A small backlog (one chunk or
less) is embedded in place, as before: no extra hop for a single import.

A chunk task is idempotent (call twice, effect once): it embeds only the chunk's items whose hash still has no
vector, and a redelivered or duplicated chunk finds nothing left to do. Every batch of a chunk commits together
with a bump of the embed job's ``generation`` -- the token that retrain fingerprints and worker pool
caches key on (learning/services/retrain.py, pool.py) -- so the set of embedded items never changes under an
unchanged generation. After committing, a chunk asks whether any item of the project still lacks a vector; the
one that finds none asks for the retrain. At least one chunk always finds none: each asks after its own commit,
so whichever commits last sees every other chunk's vectors (READ COMMITTED). Two finding none at once both
signal, and the retrain requests coalesce. The check walks the project's items from the newest id down, where
chunks (sent oldest first) are still pending until the very end, so it stops at its first row until the last
chunks.

A pass that starts while chunks of an earlier pass are still queued lists their ids again and sends them again;
the duplicates find their items embedded and do nothing (or, if both run at the same moment, embed a chunk
twice and keep one copy). That is wasted work only, and only when imports overlap a long embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from labeling.models import Item, ItemCount, Project
from learning import jobs
from learning.core import Embedder, content_hash, get_embedder
from learning.models import Embedding, LearningJob

logger = logging.getLogger(__name__)

# One embedder instance per worker process and name: MiniLM takes seconds to load and stays warm between tasks.
_EMBEDDERS: dict[str, Embedder] = {}


def embedder_for(name: str) -> Embedder:
    """The project's embedder setting ("minilm", "static", "hashing") as a warm, per-process instance."""
    if name not in _EMBEDDERS:
        # The static tier distils its table on first use into the data directory (learning/core/static_embedder.py).
        _EMBEDDERS[name] = get_embedder(name, model_cache_dir=Path(settings.DATA_DIR) / "models")
    return _EMBEDDERS[name]


def encode_vectors(vectors: np.ndarray) -> list[bytes]:
    """float16 little-endian bytes per row: the stored form (768 bytes for 384 dimensions)."""
    half = np.asarray(vectors, dtype="<f2")
    return [row.tobytes() for row in half]


def store_vectors(*, embedder_name: str, hashes: Sequence[str], vectors: np.ndarray) -> int:
    """Insert vectors for ``hashes``; existing (embedder, hash) rows are left as they are. Returns rows sent."""
    rows = [
        Embedding(embedder=embedder_name, content_hash=h, vector=blob)
        for h, blob in zip(hashes, encode_vectors(vectors), strict=True)
    ]
    Embedding.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)


def vectors_for_texts(texts: Sequence[str], embedder: Embedder) -> np.ndarray:
    """float32 vectors for arbitrary texts (seed queries), through the same cache: cached hashes are not
    embedded again, new ones are embedded and stored."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    hashes = [content_hash(t) for t in texts]
    cached = {
        h: np.frombuffer(bytes(v), dtype="<f2")
        for h, v in Embedding.objects.filter(embedder=embedder.name, content_hash__in=set(hashes))
        .values_list("content_hash", "vector")
    }
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}
    if missing:
        new = embedder.embed(list(missing.values()))
        store_vectors(embedder_name=embedder.name, hashes=list(missing), vectors=new)
        for h, row in zip(missing, np.asarray(new, dtype="<f2"), strict=True):
            cached[h] = row
    return np.stack([cached[h] for h in hashes]).astype(np.float32)


EMBED_ITEMS_TASK = "sift.learning.embed_items"


def _item_and_embedding_tables() -> tuple[str, str]:
    return connection.ops.quote_name(Item._meta.db_table), connection.ops.quote_name(Embedding._meta.db_table)


def _pending_ids(project_id: int, embedder_name: str) -> list[int]:
    """Ids (ascending) of the project's items whose content hash has no vector for the embedder."""
    item, emb = _item_and_embedding_tables()
    query = (
        f"SELECT i.id FROM {item} i WHERE i.project_id = %s AND NOT EXISTS ("  # noqa: S608 (table names only)
        f"SELECT 1 FROM {emb} e WHERE e.embedder = %s AND e.content_hash = i.content_hash) ORDER BY i.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [project_id, embedder_name])
        return [int(r[0]) for r in cursor.fetchall()]


def project_has_pending(*, project_id: int, embedder_name: str) -> bool:
    """Does any item of the project lack a vector? Scans from the newest id down (see the module docstring)."""
    item, emb = _item_and_embedding_tables()
    query = (
        f"SELECT 1 FROM {item} i WHERE i.project_id = %s AND NOT EXISTS ("  # noqa: S608 (table names only)
        f"SELECT 1 FROM {emb} e WHERE e.embedder = %s AND e.content_hash = i.content_hash) "
        f"ORDER BY i.id DESC LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [project_id, embedder_name])
        return cursor.fetchone() is not None


def _chunk_size() -> int:
    return max(1, settings.SIFT_EMBED_CHUNK)


def _send_chunk(project_id: int, item_ids: list[int]) -> None:
    from celery import current_app

    current_app.send_task(EMBED_ITEMS_TASK, args=[project_id, item_ids])


def _bump_generation(project_id: int) -> None:
    """The pool changed: move the token retrain fingerprints and pool caches key on (in the caller's transaction)."""
    job = LearningJob.objects.filter(project_id=project_id, kind=LearningJob.Kind.EMBED)
    if job.update(generation=F("generation") + 1):
        return
    # A chunk sent without a pass before it (a replayed message, the benchmark's warm-up): create the row.
    _, created = LearningJob.objects.get_or_create(project_id=project_id, kind=LearningJob.Kind.EMBED,
                                                   defaults={"generation": 1})
    if not created:
        job.update(generation=F("generation") + 1)


def _missing_batch(project_id: int, embedder_name: str, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    """The next ``limit`` items (by id, after ``after_id``) whose content hash has no vector for the embedder."""
    item, emb = _item_and_embedding_tables()
    query = (
        f"SELECT i.id, i.content_hash, i.text FROM {item} i "  # noqa: S608 (table names only)
        f"WHERE i.project_id = %s AND i.id > %s AND NOT EXISTS ("
        f"SELECT 1 FROM {emb} e WHERE e.embedder = %s AND e.content_hash = i.content_hash) "
        f"ORDER BY i.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [project_id, after_id, embedder_name, limit])
        return [(int(r[0]), str(r[1]), str(r[2])) for r in cursor.fetchall()]


@dataclass(frozen=True)
class EmbedResult:
    """What one embedding run did. ``skipped`` means another run held the claim and this one did nothing."""

    skipped: bool = False
    embedded: int = 0
    batches: int = 0
    seconds: float = 0.0
    retrain_requested: bool = False
    # Items handed to ``sift.learning.embed_items`` chunk tasks instead of being embedded in this run.
    dispatched: int = 0


def project_embed_items(*, project_id: int, batch_size: int | None = None, owner: str = "") -> EmbedResult:
    """Embed every item of the project whose content hash has no vector for the project's embedder.

    Claims the project's embed job (learning/jobs.py), embeds in batches of ``batch_size`` distinct
    hashes, committing each, then asks for a retrain (which gives a cold-start ranking before any label) when
    this pass embedded something or was requested by an import. ``owner`` is the Celery task id (see
    ``model_version_train``); a background heartbeat keeps the claim fresh while a batch is being embedded.
    """
    started = time.perf_counter()
    job = jobs.claim(kind=LearningJob.Kind.EMBED, project_id=project_id, owner=owner)
    if job is None:
        return EmbedResult(skipped=True)
    size: int = batch_size if batch_size is not None else settings.SIFT_EMBED_BATCH
    embedded = batches = 0
    error = ""
    completed = False
    try:
        embedder_setting = Project.objects.filter(pk=project_id).values_list("embedder", flat=True).first()
        if embedder_setting is None:
            error = "project no longer exists"
            return EmbedResult(seconds=time.perf_counter() - started)
        embedder = embedder_for(embedder_setting)
        pending = _pending_ids(project_id, embedder.name)
        chunk = _chunk_size()
        if len(pending) > chunk:
            # Spread over every idle worker; the chunks bump the generation and ask for the retrain themselves.
            chunks = [pending[i : i + chunk] for i in range(0, len(pending), chunk)]
            # Sent at once, as jobs.release sends a follow-up: the ids are committed and no transaction is open.
            for ids in chunks:
                _send_chunk(project_id, ids)
            logger.info("project %s: %d items to embed, sent as %d chunks", project_id, len(pending), len(chunks))
            return EmbedResult(batches=len(chunks), seconds=time.perf_counter() - started, dispatched=len(pending))
        # A batch of a slow embedder can outlast the stale time: the claim is refreshed in the background.
        with jobs.heartbeating(job):
            after_id = 0
            while True:
                rows = _missing_batch(project_id, embedder.name, after_id, size)
                if not rows:
                    break
                after_id = rows[-1][0]
                # The same text may occur on many items: embed each hash once.
                texts = {h: t for _, h, t in rows}
                vectors = embedder.embed(list(texts.values()))
                with transaction.atomic():
                    store_vectors(embedder_name=embedder.name, hashes=list(texts), vectors=vectors)
                embedded += len(texts)
                batches += 1
                if not jobs.heartbeat(job):
                    error = "claim lost (taken over as stale); stopped after a committed batch"
                    logger.warning("embed run for project %s lost its claim; stopping", project_id)
                    return EmbedResult(embedded=embedded, batches=batches, seconds=time.perf_counter() - started)
        completed = True
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        jobs.release(job, error=error, completed=completed and (embedded > 0 or job.requested))
    retrain = completed and (embedded > 0 or job.requested)
    if retrain:
        # The pool changed (new vectors, or new items whose texts were cached already): rank it again.
        jobs.signal(kind=LearningJob.Kind.RETRAIN, project_id=project_id)
    logger.info("embedded %d texts for project %s in %d batches", embedded, project_id, batches)
    return EmbedResult(embedded=embedded, batches=batches, seconds=time.perf_counter() - started,
                       retrain_requested=retrain)


def items_embed_chunk(*, project_id: int, item_ids: Sequence[int], batch_size: int | None = None) -> EmbedResult:
    """Embed those of ``item_ids`` (items of ``project_id``) whose hash has no vector yet: one chunk task's work.

    Idempotent: a second call finds the vectors and embeds nothing. Each batch commits with a generation
    bump; when no item of the project is left without a vector afterwards, the retrain is requested (see the
    module docstring).
    """
    started = time.perf_counter()
    embedder_setting = Project.objects.filter(pk=project_id).values_list("embedder", flat=True).first()
    if embedder_setting is None:
        return EmbedResult(seconds=time.perf_counter() - started)
    embedder = embedder_for(embedder_setting)
    size: int = batch_size if batch_size is not None else settings.SIFT_EMBED_BATCH
    embedded = batches = 0
    ids = sorted({int(i) for i in item_ids})
    for start in range(0, len(ids), size):
        part = ids[start : start + size]
        rows = list(Item.objects.filter(project_id=project_id, pk__in=part).values_list("content_hash", "text"))
        have = set(Embedding.objects.filter(embedder=embedder.name, content_hash__in={h for h, _ in rows})
                   .values_list("content_hash", flat=True))
        texts = {h: t for h, t in rows if h not in have}
        if not texts:
            continue
        vectors = embedder.embed(list(texts.values()))
        with transaction.atomic():
            store_vectors(embedder_name=embedder.name, hashes=list(texts), vectors=vectors)
            _bump_generation(project_id)
        embedded += len(texts)
        batches += 1
    retrain = False
    if embedded and not project_has_pending(project_id=project_id, embedder_name=embedder.name):
        retrain = jobs.signal(kind=LearningJob.Kind.RETRAIN, project_id=project_id) or True
    logger.info("chunk of project %s: embedded %d of %d items", project_id, embedded, len(ids))
    return EmbedResult(embedded=embedded, batches=batches, seconds=time.perf_counter() - started,
                       retrain_requested=retrain)


# --- Progress: how far the project's items are embedded (the pages and GET /api/projects/{slug}/embedding/) ----

# How long a counted figure is reused. While items are pending: a few seconds (the figure moves). Once none are:
# an hour, and then only the "all embedded" fact is reused, with the total read from the item-count ledger
# (labeling/models/counters.py), which is exact at every moment. The fact cannot go stale under the same key:
# the key carries the embed job's state (generation, flag, request time, claim), and every way an item can
# arrive without a vector (an import, a text edit) requests embedding, which moves it, unless a request is
# pending already, so the fact is cached only while the job is idle (no request pending, no run); a new
# embedder setting is a new key; a hard deletion takes items away with their vectors. So a 1M-item project is
# counted once per embedding, not once a minute per web process.
PROGRESS_TTL_PENDING = 3
PROGRESS_TTL_SETTLED = 3600


@dataclass(frozen=True)
class EmbeddingProgress:
    """The project's items, and how many of them have a vector for the project's embedder (exact when counted)."""

    embedder: str  # the project's setting ("minilm", "static", "hashing")
    total: int
    embedded: int

    @property
    def pending(self) -> int:
        return self.total - self.embedded


def _count_embedded(project_ids: Sequence[int], embedder_name: str) -> dict[int, tuple[int, int]]:
    """Per project: (items, items whose content hash has a vector for the embedder). One pass over the projects'
    items, each probing the (embedder, content_hash) unique index, so an item matches at most one vector."""
    item, emb = _item_and_embedding_tables()
    marks = ", ".join(["%s"] * len(project_ids))
    query = (
        f"SELECT i.project_id, COUNT(*), COUNT(e.content_hash) FROM {item} i "  # noqa: S608 (table names, marks)
        f"LEFT JOIN {emb} e ON e.embedder = %s AND e.content_hash = i.content_hash "
        f"WHERE i.project_id IN ({marks}) GROUP BY i.project_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [embedder_name, *project_ids])
        return {int(pid): (int(total), int(embedded)) for pid, total, embedded in cursor.fetchall()}


def embedding_progress(projects: Iterable[tuple[int, str, datetime]],
                       totals: Mapping[int, int] | None = None) -> dict[int, EmbeddingProgress]:
    """For each (project id, embedder setting, project created_at): how many of its items are embedded.

    ``totals`` are the projects' item counts from the ledger, when the caller has read them already (the home
    page); otherwise they are read here when needed.

    The count reads every item of the project once (milliseconds for the demo's 1,530, about a second for a
    million on PostgreSQL), so the pages do not run it on every request: each result is cached under a key
    made of the project (its id and creation time: ids restart in a recreated database, the cache may not),
    the embedder and the embed job's state (see ``PROGRESS_TTL_*``). Queries: one for the job states, one for
    the ledger where a settled project needs its total and ``totals`` lacks it, and one grouped count per
    distinct embedder among the projects not cached; none grow with the number of projects.
    """
    from django.core.cache import cache

    wanted = {int(pid): (setting, embedder_for(setting).name, created) for pid, setting, created in projects}
    if not wanted:
        return {}
    states = {
        pid: (generation, dirty, requested_at, running_token)
        for pid, generation, dirty, requested_at, running_token in LearningJob.objects.filter(
            project_id__in=list(wanted), kind=LearningJob.Kind.EMBED,
        ).values_list("project_id", "generation", "dirty", "requested_at", "running_token")
    }

    def stamp(value: object) -> str:
        return str(value.timestamp()) if isinstance(value, datetime) else str(value)

    keys = {
        pid: (f"sift:embed-progress:v2:{pid}:{stamp(created)}:{name}:"
              + "-".join(stamp(v) for v in states.get(pid, ("none",))))
        for pid, (_setting, name, created) in wanted.items()
    }
    cached = cache.get_many(list(keys.values()))
    counts: dict[int, tuple[int, int]] = {}
    settled: list[int] = []
    missing: dict[str, list[int]] = {}
    for pid, key in keys.items():
        hit = cached.get(key)
        if hit == "settled":
            settled.append(pid)
        elif isinstance(hit, list) and len(hit) == 2:
            counts[pid] = (int(hit[0]), int(hit[1]))
        else:
            missing.setdefault(wanted[pid][1], []).append(pid)
    if settled:
        known = dict(totals or {})
        unknown = [pid for pid in settled if pid not in known]
        if unknown:
            known.update({pid: c.items for pid, c in ItemCount.objects.counts(unknown).items()})
        counts.update({pid: (int(known.get(pid, 0)), int(known.get(pid, 0))) for pid in settled})
    for name, pids in missing.items():
        fresh = _count_embedded(pids, name)
        for pid in pids:
            total, embedded = fresh.get(pid, (0, 0))
            counts[pid] = (total, embedded)
            state = states.get(pid)
            idle = state is None or (not state[1] and state[3] is None)  # no request pending, no run
            if total == embedded and idle:
                cache.set(keys[pid], "settled", PROGRESS_TTL_SETTLED)
            else:
                cache.set(keys[pid], [total, embedded], PROGRESS_TTL_PENDING)
    return {pid: EmbeddingProgress(embedder=wanted[pid][0], total=total, embedded=embedded)
            for pid, (total, embedded) in counts.items()}


# --- Precomputed vectors (the demo's sample: labeling/fixtures/demo/build_vectors.py) ---------------------------


def vectors_preload(*, project_id: int, path: Path) -> int:
    """Put precomputed vectors from ``path`` into the cache for the project's items and seed queries.

    ``path`` is an ``.npz`` (read with ``allow_pickle=False``) holding ``embedder`` (a cache embedder name),
    ``hashes`` and float16 ``vectors``, as ``labeling/fixtures/demo/build_vectors.py`` writes it with the
    worker's own MiniLM. Nothing is stored unless the file's embedder is the project's and its rows have that
    embedder's width. Only hashes that an item of the project (or one of its seed queries) has now are stored,
    so a hard-deleted item's vector is not brought back (labeling/services/privacy.py deletes it), and only
    those without a vector yet. They commit together with a bump of the embed job's generation: the set of
    embedded items changed, so a retrain fingerprinted on the old generation is not taken for current (see the
    module docstring). Returns the number of vectors stored; then an embed pass is requested, which finds the
    items embedded and asks for the retrain.
    """
    row = Project.objects.filter(pk=project_id).values_list("embedder", "seed_queries").first()
    if row is None:
        return 0
    setting, seeds = row
    embedder = embedder_for(setting)
    with np.load(path, allow_pickle=False) as data:
        name = str(data["embedder"])
        hashes = [str(h) for h in data["hashes"]]
        vectors = np.asarray(data["vectors"], dtype="<f2")
    if name != embedder.name or vectors.shape != (len(hashes), embedder.dim):
        logger.info("vectors in %s are %s %s; project %s embeds with %s (%d dimensions): not used",
                    path, name, vectors.shape, project_id, embedder.name, embedder.dim)
        return 0
    wanted = set(Item.objects.filter(project_id=project_id).values_list("content_hash", flat=True))
    wanted.update(content_hash(str(s).strip()) for s in (seeds or []) if str(s).strip())
    offered = [h for h in hashes if h in wanted]
    have: set[str] = set()
    for start in range(0, len(offered), 500):
        have.update(Embedding.objects.filter(embedder=name, content_hash__in=offered[start : start + 500])
                    .values_list("content_hash", flat=True))
    rows = [i for i, h in enumerate(hashes) if h in wanted and h not in have]
    if not rows:
        return 0
    with transaction.atomic():
        store_vectors(embedder_name=name, hashes=[hashes[i] for i in rows], vectors=vectors[rows])
        _bump_generation(project_id)
        jobs.request(kind=LearningJob.Kind.EMBED, project_id=project_id)
    logger.info("project %s: %d precomputed %s vectors stored from %s", project_id, len(rows), name, path.name)
    return len(rows)
