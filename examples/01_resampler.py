"""Reuse the MiniCPM-V 3-D resampler in your own project.

    python examples/01_resampler.py

The resampler turns patch features from any vision encoder into a fixed number of LLM tokens per
*group*: an image slice is a group of one; up to 6 video frames form one group and share one set of
query outputs (that is what makes 4.5's video tokens cheap). Inputs are packed: all patches of all
slices and frames in one [N, kv_dim] tensor, described by three small index tensors, so slices of
different sizes need no padding.

To load the released weights instead of a random init, build ``resampler3d_mcpv45()`` and call
``load_state_dict`` with the checkpoint's ``resampler.*`` tensors (prefix stripped); the parameter
names are the official ones.
"""

from __future__ import annotations

import torch

from blocks.resampler import resampler2d_tiny, resampler3d_tiny

# An image cut into an overview and two slices (patch grids, rows x cols) ...
IMAGE_SLICES = [(16, 16), (12, 20), (12, 20)]
# ... and a 6-frame clip sampled every 0.5 s (temporal ids in 0.1 s units), compressed as one group.
VIDEO_FRAMES = [(16, 16)] * 6
VIDEO_TIMES = [0, 5, 10, 15, 20, 25]


def main() -> dict[str, int]:
    """Run the tiny 3-D and 2-D resamplers on one packed batch; return tokens out per variant."""
    torch.manual_seed(0)
    tgt_sizes = torch.tensor(IMAGE_SLICES + VIDEO_FRAMES)        # [S, 2] patch rows, cols
    temporal_ids = torch.tensor([-1] * len(IMAGE_SLICES) + VIDEO_TIMES)  # [S], -1 = image slice
    group_sizes = torch.tensor([1] * len(IMAGE_SLICES) + [len(VIDEO_FRAMES)])  # [G]
    num_patches = int((tgt_sizes[:, 0] * tgt_sizes[:, 1]).sum())
    features = torch.randn(num_patches, 64)  # stands in for your vision encoder's [N, width] output

    print(f"input: {num_patches} patches in {len(tgt_sizes)} slices/frames, {len(group_sizes)} groups")
    tokens_out = {}
    for name, build in (("3d", resampler3d_tiny), ("2d", resampler2d_tiny)):
        resampler = build()
        with torch.no_grad():
            tokens = resampler(features, tgt_sizes, temporal_ids, group_sizes)  # [T, out_dim]
        video_tokens = resampler.tokens_per_group(VIDEO_FRAMES)
        video_patches = sum(h * w for h, w in VIDEO_FRAMES)
        print(f"{name}: {tuple(tokens.shape)} tokens; the video group yields {video_tokens} "
              f"({len(VIDEO_FRAMES)} frames, {video_patches} patches -> {video_tokens}: "
              f"{video_patches / video_tokens:.0f}x compression); "
              f"overall {num_patches / tokens.shape[0]:.1f} patches per token")
        tokens_out[name] = tokens.shape[0]
    return tokens_out


if __name__ == "__main__":
    main()
