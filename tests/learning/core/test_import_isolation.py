"""learning.core and the simulate CLI import no Django, DRF, Celery, project code, and no torch up front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_importing_core_and_cli_imports_no_django_and_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import learning.core, learning.core.simulation, learning.simulate\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'celery', 'labeling', 'config', 'torch', 'sentence_transformers'} "
        "or m in {'learning.models', 'learning.services', 'learning.tasks', 'learning.scheduling'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []
