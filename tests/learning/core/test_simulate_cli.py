"""``python -m learning.simulate`` end to end with the hashing embedder on a small generated file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

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
        "strategy", "seed", "n_pool", "n_test", "labels", "macro_f1", "average_precision", "positives_found",
    }  # fmt: skip
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


def test_cli_reports_bad_positive(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl.gz"
    _write_data(data, 30)
    done = _run([
        "--data", str(data), "--strategy", "margin", "--seed", "0", "--initial", "5", "--batch-size", "5",
        "--budget", "10", "--positive", "eggs", "--embedder", "hashing", "--out", str(tmp_path / "c.json"),
    ])  # fmt: skip
    assert done.returncode == 2
    assert "--positive 'eggs' is not a label" in done.stderr
