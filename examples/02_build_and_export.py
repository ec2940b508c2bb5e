"""Build MiniCPM-V 4.5 from blocks, swap a block, and export/reload the official checkpoint layout.

    python examples/02_build_and_export.py [out_dir]

1. The full model (SigLIP-400M + 3-D resampler + Qwen3-8B) built on the meta device: every shape and
   parameter count, no memory, in about a second.
2. The same topology at test size, run on one packed batch, exported exactly like the released
   checkpoint (config.json, sharded safetensors, index) and loaded back.
3. A different resampler through one Hydra override (the CLI accepts the same strings).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from assemblies.checkpoints.official import export_index, export_official, load_official
from assemblies.presets import mcpv45, mcpv45_tiny
from blocks.batch import IGNORE_INDEX, Sample, collate


def one_image_sample(tokens_per_image: int, grid: tuple[int, int] = (4, 6)) -> Sample:
    """A prompt with one image (a 4 x 6 patch grid) whose placeholders sit at positions 2.., answer labelled."""
    ids = [11, 12] + [0] * tokens_per_image + [13, 14, 15, 16]
    labels = [IGNORE_INDEX] * (len(ids) - 3) + ids[-3:]
    rows, cols = grid
    return Sample(input_ids=torch.tensor(ids), labels=torch.tensor(labels),
                  patches=torch.randn(rows * cols, 3 * 14 * 14), tgt_sizes=torch.tensor([[rows, cols]]),
                  temporal_ids=torch.tensor([-1]), group_sizes=torch.tensor([1]),
                  image_bound=torch.tensor([[2, 2 + tokens_per_image]]), sample_id="example")


def main(out_dir: str | Path) -> dict:
    torch.manual_seed(0)
    full = mcpv45()  # device="meta" by default
    counts = full.num_params()
    print("full:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    index = export_index(full)
    print(f"full export: {len(index['weight_map'])} tensors, {index['metadata']['total_size']:,} bytes in bf16, "
          f"{len(set(index['weight_map'].values()))} shards")

    tiny = mcpv45_tiny().eval()
    batch = collate([one_image_sample(tiny.resampler.tokens_per_group([(4, 6)]))], pad_id=0)
    with torch.no_grad():
        out = tiny(batch)
    print(f"tiny: {tiny.num_params()['total']:,} params, logits {tuple(out.logits.shape)}, loss {out.loss:.4f}")

    directory = export_official(tiny, out_dir, dtype=torch.float32, max_shard_bytes=1_000_000)
    files = sorted(p.name for p in directory.iterdir())
    print(f"exported to {directory}: {files}")
    reloaded = load_official(directory).eval()
    with torch.no_grad():
        same = torch.equal(reloaded(batch).logits, out.logits)
    print(f"reloaded: identical logits {same}")

    swapped = mcpv45("tiny", ["resampler=mlp"], device="cpu")
    print(f"resampler=mlp: {type(swapped.resampler).__name__}, "
          f"{swapped.resampler.tokens_per_group([(4, 6)])} tokens per image")
    return {"params": counts, "files": files, "identical": same}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mcpv_export_"))
