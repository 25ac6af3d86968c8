"""``python -m learning.simulate`` end to end with the hashing embedder on a small generated file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learning.core.strategies import DEFAULT_STRATEGY

ROOT = Path(__file__).resolve().parents[3]

SPAM = ["win a free prize now call {n}", "free cash bonus claim {n} today", "urgent you won {n} text back"]
HAM = ["see you at lunch {n}", "running late, home by {n}", "can you pick up milk {n}", "the meeting moved to {n}"]


def _write_data(path: Path, n: int = 120) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i in range(n):
            is_spam = i % 6 == 0
            template = (SPAM if is_spam else HAM)[i % (3 if is_spam else 4)]
            row = {"external_id": f"x{i}", "text": template.format(n=i), "label": "spam" if is_spam else "ham"}
            handle.write(json.dumps(row) + "\n")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "learning.simulate", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_cli_writes_contract_json(tmp_path: Path) -> None:
    strategy = "default"
    data = tmp_path / "items.jsonl.gz"
    _write_data(data)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("free prize\n\nclaim your cash\n", encoding="utf-8")
    out = tmp_path / "curve.json"
    args = [
        "--data", str(data), "--strategy", strategy, "--seed", "3", "--initial", "10", "--batch-size", "10",
        "--budget", "50", "--positive", "spam", "--embedder", "hashing", "--cache", str(tmp_path / "cache"),
        "--seed-queries", str(seeds), "--out", str(out),
    ]  # fmt: skip
    done = _run(args)
    assert done.returncode == 0, done.stderr
    curve = json.loads(out.read_text(encoding="utf-8"))
    assert set(curve) == {
        "strategy", "strategy_used", "seed", "n_pool", "n_test", "labels", "macro_f1", "average_precision",
        "positives_found",
    }  # fmt: skip
    assert curve["strategy_used"] == DEFAULT_STRATEGY
    assert (curve["strategy"], curve["seed"], curve["n_pool"], curve["n_test"]) == (strategy, 3, 84, 36)
    assert curve["labels"] == [10, 20, 30, 40, 50]
    assert len(curve["macro_f1"]) == len(curve["average_precision"]) == len(curve["positives_found"]) == 5
    assert curve["positives_found"] == sorted(curve["positives_found"])
    assert all(0.0 <= v <= 1.0 for v in curve["macro_f1"] + curve["average_precision"])

    # Same run again: identical output (determinism), and the cache file is not rewritten (nothing embedded).
    cache_file = tmp_path / "cache" / "hashing-v1-384.npz"
    mtime = cache_file.stat().st_mtime_ns
    out2 = tmp_path / "curve2.json"
    assert _run([*args[:-1], str(out2)]).returncode == 0
    assert json.loads(out2.read_text(encoding="utf-8")) == curve
    assert cache_file.stat().st_mtime_ns == mtime


def test_cli_without_positive_and_with_test_file(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl.gz"
    _write_data(data, 60)
    test = tmp_path / "test.jsonl.gz"
    _write_data(test, 30)
    out = tmp_path / "curve.json"
    done = _run([
        "--data", str(data), "--test", str(test), "--strategy", "entropy", "--seed", "0", "--initial", "5",
        "--batch-size", "5", "--budget", "15", "--embedder", "hashing", "--out", str(out),
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr
    curve = json.loads(out.read_text(encoding="utf-8"))
    assert "positives_found" not in curve
    assert (curve["n_pool"], curve["n_test"], curve["labels"]) == (60, 30, [5, 10, 15])


def test_cli_label_noise_adds_the_contract_block(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl.gz"
    _write_data(data, 200)
    out = tmp_path / "curve.json"
    done = _run([
        "--data", str(data), "--strategy", "margin", "--seed", "4", "--initial", "20", "--batch-size", "20",
        "--budget", "120", "--positive", "spam", "--embedder", "hashing", "--label-noise", "0.1",
        "--out", str(out),
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr
    block = json.loads(out.read_text(encoding="utf-8"))["label_noise"]
    assert list(block) == ["rate", "labelled", "flipped", "found_in_first"]
    assert (block["rate"], block["labelled"]) == (0.1, 120)
    assert list(block["found_in_first"]) == ["1x", "2x"]
    assert 0 <= block["found_in_first"]["1x"] <= block["found_in_first"]["2x"] <= block["flipped"] > 0
    bad = _run([
        "--data", str(data), "--strategy", "margin", "--seed", "4", "--initial", "20", "--batch-size", "20",
        "--budget", "40", "--embedder", "hashing", "--label-noise", "1.5", "--out", str(tmp_path / "bad.json"),
    ])  # fmt: skip
    assert bad.returncode == 2
    assert "--label-noise must be in [0, 1), got 1.5" in bad.stderr
    assert not (tmp_path / "bad.json").exists()


def test_cli_reports_bad_positive(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl.gz"
    _write_data(data, 30)
    done = _run([
        "--data", str(data), "--strategy", "margin", "--seed", "0", "--initial", "5", "--batch-size", "5",
        "--budget", "10", "--positive", "eggs", "--embedder", "hashing", "--out", str(tmp_path / "c.json"),
    ])  # fmt: skip
    assert done.returncode == 2
    assert "--positive 'eggs' is not a label" in done.stderr


def _write_multi_label(path: Path, n: int = 150) -> list[list[str]]:
    """Rows carrying threat, insult, both or neither (an empty list): a multi-label file."""
    words = {"threat": "i will find you {n}", "insult": "you absolute clown {n}"}
    written = []
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            keys = [key for key, every in (("threat", 3), ("insult", 4)) if i % every == 0]
            text = " and ".join(words[k].format(n=i) for k in keys) or f"nice weather today {i}"
            handle.write(json.dumps({"external_id": f"m{i}", "text": text, "label": keys}) + "\n")
            written.append(keys)
    return written


def test_cli_simulates_a_multi_label_file(tmp_path: Path) -> None:
    data, test = tmp_path / "multi.jsonl", tmp_path / "multi-test.jsonl"
    rows = _write_multi_label(data)
    _write_multi_label(test, 60)
    out = tmp_path / "curve.json"
    done = _run([
        "--data", str(data), "--test", str(test), "--strategy", "default", "--seed", "2", "--initial", "10",
        "--batch-size", "40", "--budget", "500", "--positive", "threat", "--embedder", "hashing", "--out", str(out),
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr
    curve = json.loads(out.read_text(encoding="utf-8"))
    assert (curve["n_pool"], curve["n_test"]) == (150, 60)
    # The budget is capped at the pool, so the last round holds every item: it has found all 50 threats, the
    # items that carry both labels included.
    assert curve["labels"] == [10, 50, 90, 130, 150]
    assert curve["positives_found"] == sorted(curve["positives_found"])
    assert curve["positives_found"][-1] == sum("threat" in keys for keys in rows) == 50
    # Separable by construction: per-label F1 at the 0.5 threshold and one-vs-rest AP both reach 1 on the test file.
    assert curve["macro_f1"][-1] == pytest.approx(1.0) and curve["average_precision"][-1] == pytest.approx(1.0)


def test_multi_label_figures_are_per_label() -> None:
    import numpy as np

    from learning.core.metrics import average_precision_indicator, label_indicator, macro_f1_indicator

    classes = ["insult", "threat"]
    truth = label_indicator([{"threat"}, {"insult", "threat"}, set(), {"insult"}], classes)
    assert truth.tolist() == [[False, True], [True, True], [False, False], [True, False]]
    proba = np.array([[0.1, 0.9], [0.6, 0.4], [0.2, 0.3], [0.7, 0.2]], dtype=np.float32)
    # insult: both right (F1 1); threat: one of two found, no false alarm (P 1, R 0.5, F1 2/3).
    assert macro_f1_indicator(truth, proba >= 0.5) == (1.0 + 2 / 3) / 2
    # threat ranks 0.9 (yes), 0.4 (yes), 0.3, 0.2: AP 1; insult ranks 0.7 (yes), 0.6 (yes): AP 1.
    assert average_precision_indicator(truth, proba, classes) == pytest.approx(1.0)
    assert average_precision_indicator(truth, proba[:, ::-1], classes, positive="threat") == pytest.approx(0.5)
