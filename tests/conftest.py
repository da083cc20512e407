import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

def _find_shared() -> Path:
    """``../shared`` beside the repository (CI), or beside any folder above it (worktrees)."""
    env = os.environ.get("CONVLENS_SHARED")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    for parent in repo.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared"
    return repo.parent / "shared"


def dtype_tol(dtype: torch.dtype, magnitude: float, terms: int = 1) -> float:
    """Absolute tolerance for comparing two computations of the same values in ``dtype`` that
    may sum ``terms`` products in different orders (other kernels, another CPU): a few units of
    rounding, times sqrt(terms) (random-walk growth of rounding errors), times the size of the
    values. Derived from the dtype and the magnitude, never from one CPU's result."""
    return 4 * torch.finfo(dtype).eps * max(terms, 1) ** 0.5 * max(float(magnitude), 1e-30)


SHARED = _find_shared()
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="session")
def lenet():
    from convlens import load_model

    return load_model("lenet-digits")


@pytest.fixture(scope="session")
def digits():
    from convlens import load_dataset

    return load_dataset("digits")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
