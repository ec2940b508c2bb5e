"""The tokenizer of a run, pinned in its output directory.

The tiny tokenizer is rebuilt from a hash of the synthetic corpus, so a changed corpus would silently
give a resumed run (and its export) another tokenizer. The first start of a run copies the configured
tokenizer to ``<output_dir>/tokenizer/``; every later start of the same run uses that copy, and the
export copies it again. ``metrics.json`` records its directory and digest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from assemblies.checkpoints.model_dir import tokenizer_digest, write_tokenizer
from blocks.data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
TOKENIZER_DIR = "tokenizer"


def pin_tokenizer(configured: PreTrainedTokenizerBase, directory: Path, write: bool = True) -> PreTrainedTokenizerBase:
    """The run's tokenizer: the one pinned in ``directory`` if there is one, else ``configured``, pinned there
    (when ``write``: one process of a multi-process run writes, the others use ``configured``)."""
    if (directory / "tokenizer_config.json").is_file():
        pinned = load_tokenizer(directory)
        if pinned.get_vocab() != configured.get_vocab():
            log.warning("the configured tokenizer differs from the one this run started with; keeping the run's "
                        "(%s). Use a new output directory to train with the configured one.", directory)
        return pinned
    if not write:
        return configured
    write_tokenizer(configured, directory)
    log.info("tokenizer pinned in %s (sha256 %s)", directory, tokenizer_digest(directory)[:16])
    return load_tokenizer(directory)
