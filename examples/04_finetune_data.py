"""Fine-tuning data in the official MiniCPM-V format: write it, load it, batch it, count what was skipped.

    python examples/04_finetune_data.py [--out DIR]

Writes a tiny dataset (PNGs, a 2-second video, a folder of frames and a JSONL file with one image,
several images, a video, a frame folder, text only, and three bad entries: a malformed line, a
missing image and a conversation too long for ``max_length``) into a temporary folder (or ``--out``),
then reads it with ``OfficialJsonDataset``, tokenizes it with the real processor and a tiny BPE
tokenizer, groups it into token-budget batches, prints each batch's shapes and the skip report.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from blocks.data.batching import TokenBudgetBatchSampler, estimate_lengths, measure_lengths
from blocks.data.dataset import ProcessedDataset, SkippingCollate, SkipReport
from blocks.data.formats import OfficialJsonDataset
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.tokenizer import tiny_tokenizer


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _write_video(path: Path, seconds: int = 2, rate: int = 10, size: int = 32) -> None:
    """A square that moves left to right (mpeg4, yuv420p)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(seconds * rate):
            pixels = np.zeros((size, size, 3), dtype=np.uint8)
            x = k * (size - 8) // (seconds * rate - 1)
            pixels[12:20, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_dataset(root: Path) -> Path:
    """Media files plus ``train.jsonl`` in the official format; returns the JSONL path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 60)), ("blue", (40, 60, 220))):
        Image.new("RGB", (160, 96), colour).save(root / "images" / f"{name}.png")
    _write_video(root / "moving_square.mp4")
    (root / "frames").mkdir(exist_ok=True)
    for k in range(4):
        Image.new("RGB", (32, 32), (60 * k,) * 3).save(root / "frames" / f"{k:04d}.png")
    entries = [
        {"id": "single", "image": "images/red.png", "conversations": _chat("What colour is this?", "Red.")},
        {"id": "multi", "image": {"<image_00>": "images/green.png", "<image_01>": "images/blue.png"},
         "conversations": _chat("<image_00> and <image_01>: which one is blue?", "The second.")},
        {"id": "video", "video": "moving_square.mp4", "fps": 4, "max_packing": 2,
         "conversations": _chat("<video>\nWhich way does the square move?", "Left to right.")},
        {"id": "frames", "video": "frames", "frame_rate": 2,
         "conversations": _chat("<video>\nDoes it get brighter?", "Yes.")},
        {"id": "text", "conversations": _chat("What is 2 + 2?", "4.")},
        '{"id": "broken", "conversations": [',
        {"id": "lost", "image": "images/missing.png", "conversations": _chat("Colour?", "Unknown.")},
        {"id": "essay", "conversations": _chat("Write a long story.", "Once upon a time. " * 200)},
    ]
    path = root / "train.jsonl"
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def main(argv: list[str] | None = None) -> SkipReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the dataset (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the per-sample skip warnings are summarised below
    with tempfile.TemporaryDirectory() as scratch:
        jsonl = write_dataset(args.out or Path(scratch))
        tokenizer = tiny_tokenizer()
        # Small slices (112 px) and a 1024-token limit keep this CPU-sized; the official values are 448 and 4096+.
        processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(scale_resolution=112, max_slice_nums=4,
                                                                 max_length=1024))
        # max_groups=4 (official: 180) so the 2 s video at 4 fps (8 frames) is packed 2 frames per group.
        source = OfficialJsonDataset(jsonl, max_groups=4)
        dataset = ProcessedDataset(source, processor)
        # Exact lengths cost one processing pass; the estimate reads only text and file headers.
        lengths = measure_lengths(dataset)
        estimates = estimate_lengths(source, lambda text: len(tokenizer(text).input_ids), max_slice_nums=4,
                                     scale_resolution=112)
        print(f"{len(dataset)} entries in {jsonl.name}; tokens per entry: {lengths} (0 = skipped); "
              f"header-only estimate: {estimates}")
        sampler = TokenBudgetBatchSampler(lengths, max_tokens=1024, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=SkippingCollate(tokenizer.pad_token_id))
        report = SkipReport()
        for step, batch in enumerate(loader):
            report.update(batch)
            print(f"batch {step}: ids {batch.sample_ids} input_ids {tuple(batch.input_ids.shape)} "
                  f"patches {tuple(batch.patches.shape)} slices/frames {batch.tgt_sizes.shape[0]} "
                  f"groups {batch.group_sizes.tolist()} temporal_ids {batch.temporal_ids.tolist()} "
                  f"skipped {batch.skipped}")
        print(report.table())
    return report


if __name__ == "__main__":
    main()
