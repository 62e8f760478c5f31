from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference_cases"
LOCAL_REFERENCE_DIR = Path(__file__).parent / "data" / "reference_cases"


def reference_cases() -> list[tuple[dict, dict[str, np.ndarray]]]:
    """The authors' reference outputs: our copy in tests/data plus any case in ../shared beside the checkout."""
    paths = {p.stem: p for folder in (LOCAL_REFERENCE_DIR, REFERENCE_DIR) if folder.is_dir() for p in folder.glob("*.json")}
    cases = []
    for _, path in sorted(paths.items()):
        meta = json.loads(path.read_text())
        arrays = dict(np.load(path.with_suffix(".npz")))
        cases.append((meta, arrays))
    return cases


@pytest.fixture(scope="session")
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(3) as ex:
        yield ex
