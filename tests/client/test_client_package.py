"""sift_client is its own package: importable without Django, typed, installed from client/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sift_client

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_client_loads_no_django() -> None:
    code = "import sys, sift_client; print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'labeling')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/").stdout
    assert out.strip() == "[]"


def test_the_installed_client_is_this_checkout_s_and_typed() -> None:
    installed = Path(sift_client.__file__).parent
    assert (installed / "py.typed").is_file()
    assert (installed / "client.py").read_text() == (ROOT / "client" / "sift_client" / "client.py").read_text(), (
        "the .venv's sift_client is stale: pip install ./client")
