"""Shared test fixtures.

Tests that read the reference material in ``../shared`` (official config, tokenizer, golden vectors)
skip with a reason when it is absent, as in a user's clone. CI sets ``MCPV_REQUIRE_SHARED=1``, which
turns that skip into a failure so the compatibility proofs always run there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from golden_manifest import manifest_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MCPV_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED / "reference" / "minicpmv45"
GOLDEN_DIR = SHARED / "golden" / "minicpmv45"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    reason = f"{path} is absent (reference material from ../shared; see tests/conftest.py)"
    if os.environ.get("MCPV_REQUIRE_SHARED") == "1":
        pytest.fail(f"MCPV_REQUIRE_SHARED=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The official config/tokenizer/index files of MiniCPM-V 4.5."""
    return _require(REFERENCE_DIR)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Golden vectors produced by the official implementation, checked against their manifest."""
    directory = _require(GOLDEN_DIR)
    problems = manifest_problems(directory)
    if problems:
        pytest.fail(f"{directory} does not match its manifest.json: " + "; ".join(problems))
    return directory


@pytest.fixture
def one_thread():
    """torch on one thread during the test: a tiny model gains nothing from a second one, and loses
    much when other jobs share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers share the two cores: one compute thread each, and in the processes a test starts.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Slow tests are handed out first, so that the short ones fill in and no worker ends on a long one.
        items.sort(key=lambda item: "slow" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


def write_tiny_chat_checkpoint(directory: Path) -> Path:
    """A complete official-format directory of a random tiny MiniCPM-V 4.5, as the toolkit exports it."""
    from assemblies.checkpoints.model_dir import export_model_dir
    from assemblies.presets import mcpv45_tiny
    from blocks.data.processor_config import ProcessorConfig
    from blocks.data.tokenizer import tiny_tokenizer

    torch.manual_seed(0)
    model = mcpv45_tiny()
    texts = ["How many shapes are there?", "There are 3 shapes.", "The red square is left of the circle.",
             "Which way does the circle move?", "It moves down."] * 20
    tokenizer = tiny_tokenizer(texts, vocab_size=320, cache_dir=directory / ".tokenizer-cache")
    return export_model_dir(model, directory, tokenizer, ProcessorConfig(max_slice_nums=1, scale_resolution=112),
                            dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_chat_checkpoint(tmp_path_factory) -> Path:
    """``write_tiny_chat_checkpoint`` once per session (read-only for the tests)."""
    return write_tiny_chat_checkpoint(tmp_path_factory.mktemp("tiny_chat_checkpoint"))
