import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BNNMD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (or $BNNMD_SHARED_DATA); skip with the reason when absent."""
    if not (SHARED_DATA / "rmd17").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set BNNMD_SHARED_DATA to use it)")
    return SHARED_DATA
