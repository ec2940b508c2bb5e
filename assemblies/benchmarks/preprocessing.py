"""Preprocessing throughput: our processor vs a straightforward per-slice PIL + numpy pipeline.

Both paths turn the same ``Record``s (one question + answer about one image, or about one video) into
the same ``Sample`` (packed float32 patch rows, tgt_sizes, tokens, labels, image_bound); the run
asserts that every output tensor is identical, then reports images/s and video-seconds/s.

The baseline (``BaselineProcessor``) is what the official processor does, written plainly: PIL
BICUBIC resize of the thumbnail and of the refine image, crop of every cell, then per slice
``np.array(...).astype(float32) / 255``, ``(x - mean) / std``, HWC -> CHW, ``reshape_by_patch`` (torch
unfold) and the conversion of that layout to our patch rows; the prompt goes through the Jinja chat
template and labels follow the official finetune rule on token ids. A leaner variant
(``baseline_direct``) skips the official layout and cuts each normalised slice into patch rows with
one numpy reshape/transpose, to show how much of the gain is the layout round trip. Ours
(``MiniCPMVProcessor``) does the same two resizes, then casts the uint8 pixels straight into patch
order in one preallocated float32 buffer and normalises it in place; the chat is rendered in Python
with its loss spans.

The two PIL resizes are identical work in both paths and bit-exact output forbids changing them (a
re-implementation of PIL's fixed-point bicubic in numpy/scipy matched it bit for bit but was slower
than PIL's C loop), so they bound the speed-up; ``resize_ms`` reports that shared floor.

    python -m assemblies.benchmarks.preprocessing            # or: python tasks/benchmark.py names=[preprocessing]
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from PIL import Image

from blocks.batch import IGNORE_INDEX, Sample, empty_visual
from blocks.data.image_processing import official_to_patch_rows
from blocks.data.placeholders import image_placeholder, video_placeholder
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.record import IMAGE_MARKER, VIDEO_MARKER, Record, VideoClip
from blocks.data.slicing import plan_slices, slice_image
from blocks.data.tokenizer import load_tokenizer, tiny_tokenizer

IMAGE_SIZES = [(1000, 700), (1344, 1344), (3000, 800), (1920, 1080), (800, 1200), (640, 480), (448, 448), (300, 200)]
QUESTION, ANSWER = "Describe the picture in detail.", "A smooth colour gradient with fine noise."
TOKENIZER_TEXTS = [QUESTION, ANSWER, "What happens in the video?", "The square moves to the right."] * 20


def synthetic_image(width: int, height: int, seed: int) -> Image.Image:
    """A gradient with noise: resampling cost does not depend on content, but the noise exercises rounding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))


def _record(record_id: str, prompt: str, **media) -> Record:
    return Record(id=record_id, conversations=[{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": ANSWER}], **media)


def image_records(sizes: list[tuple[int, int]] = IMAGE_SIZES) -> list[Record]:
    return [_record(f"img-{w}x{h}", f"{IMAGE_MARKER}\n{QUESTION}", images=[synthetic_image(w, h, i)])
            for i, (w, h) in enumerate(sizes)]


def video_records(clips: int = 2, seconds: int = 6, fps: int = 2, frame_size: tuple[int, int] = (640, 360),
                  packing: int = 3) -> list[Record]:
    """Clips of ``seconds * fps`` frames, grouped ``packing`` at a time, timestamps in 0.1 s units."""
    records = []
    for c in range(clips):
        frames = [synthetic_image(*frame_size, seed=100 * c + f) for f in range(seconds * fps)]
        ids = [round(f * 10 / fps) for f in range(len(frames))]
        groups = [ids[i:i + packing] for i in range(0, len(ids), packing)]
        records.append(_record(f"video-{c}", f"{VIDEO_MARKER}\nWhat happens in the video?",
                               videos=[VideoClip(frames=frames, groups=groups)]))
    return records


class BaselineProcessor:
    """The official pipeline written plainly (see the module docstring); train mode only."""

    def __init__(self, tokenizer, config: ProcessorConfig, official_layout: bool = True) -> None:
        self.tokenizer, self.config, self.official_layout = tokenizer, config, official_layout
        self.mean = np.array([0.5, 0.5, 0.5], dtype=np.float32)
        self.std = np.array([0.5, 0.5, 0.5], dtype=np.float32)

    def _slice_rows(self, img: Image.Image, max_slice_nums: int) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        p = self.config.patch_size
        rows, sizes = [], []
        for piece in slice_image(img.convert("RGB"), max_slice_nums, self.config.scale_resolution, p):
            x = np.array(piece).astype(np.float32) / 255
            x = (x - self.mean) / self.std
            h, w = x.shape[0] // p, x.shape[1] // p
            sizes.append((h, w))
            if not self.official_layout:
                rows.append(torch.from_numpy(x.reshape(h, p, w, p, 3).transpose(0, 2, 4, 1, 3).reshape(h * w, -1)))
                continue
            x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
            unfolded = torch.nn.functional.unfold(x, (p, p), stride=(p, p))  # reshape_by_patch
            official = unfolded.reshape(3, p, p, -1).permute(0, 1, 3, 2).reshape(3, p, -1)
            rows.append(official_to_patch_rows(official, p))
        return rows, sizes

    def __call__(self, record: Record) -> Sample:
        c, n_tokens = self.config, self.config.tokens_per_group
        rows, sizes, temporal, groups, placeholders = [], [], [], [], {}
        for i, img in enumerate(record.images):
            r, s = self._slice_rows(img, c.max_slice_nums)
            rows, sizes, temporal, groups = rows + r, sizes + s, temporal + [-1] * len(s), groups + [1] * len(s)
            grid = plan_slices(img.size, c.max_slice_nums, c.scale_resolution, c.patch_size).grid
            placeholders[IMAGE_MARKER] = image_placeholder([n_tokens] * len(s), grid, i if c.use_image_id else None)
        for video in record.videos:
            for ids in video.groups:
                for frame in video.frames[len(temporal):len(temporal) + len(ids)]:
                    r, s = self._slice_rows(frame, 1)
                    rows, sizes = rows + r, sizes + s
                temporal, groups = temporal + list(ids), groups + [len(ids)]
            placeholders[VIDEO_MARKER] = video_placeholder([n_tokens] * len(video.groups))
        messages = [{"role": t["role"], "content": t["content"]} for t in record.conversations]
        for marker, text in placeholders.items():
            messages[0]["content"] = messages[0]["content"].replace(marker, text)
        ids = torch.tensor(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        return Sample(input_ids=ids, labels=self._labels(ids), image_bound=self._bounds(ids),
                      patches=torch.cat(rows) if rows else empty_visual()["patches"],
                      tgt_sizes=torch.tensor(sizes), temporal_ids=torch.tensor(temporal),
                      group_sizes=torch.tensor(groups), sample_id=record.id)

    def _labels(self, ids: torch.Tensor) -> torch.Tensor:
        """Official rule: after each "<|im_start|>assistant" skip "assistant\\n" (and the empty think block of
        the last turn) and learn through the next <|im_end|>."""
        convert = self.tokenizer.convert_tokens_to_ids
        heads = [i for i in torch.nonzero(ids == convert("assistant")).flatten().tolist()
                 if i > 0 and ids[i - 1] == convert("<|im_start|>")]
        ends = torch.nonzero(ids == convert("<|im_end|>")).flatten()
        empty_think = [convert(t) for t in self.tokenizer.tokenize("<think>\n\n</think>\n\n")]
        labels = torch.full_like(ids, IGNORE_INDEX)
        for n, head in enumerate(heads):
            start = head + 2
            if n == len(heads) - 1 and ids[start:start + 4].tolist() == empty_think:
                start += 4
            end = int(ends[ends > start][0])
            labels[start:end + 1] = ids[start:end + 1]
        return labels

    def _bounds(self, ids: torch.Tensor) -> torch.Tensor:
        convert = self.tokenizer.convert_tokens_to_ids
        starts = torch.nonzero((ids == convert("<image>")) | (ids == convert("<slice>"))).flatten() + 1
        ends = torch.nonzero((ids == convert("</image>")) | (ids == convert("</slice>"))).flatten()
        return torch.stack([starts, ends], dim=1)


def _same(a: Sample, b: Sample) -> bool:
    names = ("input_ids", "labels", "patches", "tgt_sizes", "temporal_ids", "group_sizes", "image_bound")
    return all(torch.equal(getattr(a, n).long() if n != "patches" else a.patches,
                           getattr(b, n).long() if n != "patches" else b.patches) for n in names)


def _resize_only(records: list[Record], config: ProcessorConfig) -> None:
    for record in records:
        frames = [(f, 1) for v in record.videos for f in v.frames]
        for img, k in [(i, config.max_slice_nums) for i in record.images] + frames:
            geometry = plan_slices(img.size, k, config.scale_resolution, config.patch_size)
            img.resize(geometry.source_size, Image.Resampling.BICUBIC)
            if geometry.grid:
                img.resize(geometry.refine_size, Image.Resampling.BICUBIC)


def _seconds(fn, records: list[Record]) -> list[float]:
    started = time.perf_counter()
    for record in records:
        fn(record)
    return [time.perf_counter() - started]


def run(repeats: int = 5, tokenizer_dir: str | None = None, max_slice_nums: int = 9, video_clips: int = 2,
        video_seconds: int = 6, video_fps: int = 2, threads: int | None = None) -> dict:
    """Time both paths, interleaved repeat by repeat, on the image set and on synthetic video clips."""
    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else tiny_tokenizer(TOKENIZER_TEXTS, vocab_size=512)
    config = ProcessorConfig(max_slice_nums=max_slice_nums)
    paths = {"ours": MiniCPMVProcessor(tokenizer, config), "baseline": BaselineProcessor(tokenizer, config),
             "baseline_direct": BaselineProcessor(tokenizer, config, official_layout=False),
             "resize_only": lambda record: _resize_only([record], config)}
    images = image_records()
    videos = video_records(video_clips, video_seconds, video_fps)
    for record in images + videos:  # identical output, or no figures at all
        reference = paths["ours"](record)
        for name in ("baseline", "baseline_direct"):
            if not _same(reference, paths[name](record)):
                raise AssertionError(f"{record.id}: our output differs from {name}'s")

    figures: dict = {"identical_output": True, "image_sizes": [list(s) for s in IMAGE_SIZES], "repeats": repeats}
    per_image = {}
    for record in images:
        times = {name: [] for name in paths}
        for _ in range(repeats):  # interleaved, so load changes hit every path alike
            for name, fn in paths.items():
                times[name] += _seconds(fn, [record])
        per_image[record.id] = {f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}
    total = {key: sum(v[key] for v in per_image.values()) for key in per_image[images[0].id]}
    figures["per_image"] = {k: {m: round(v, 2) for m, v in d.items()} for k, d in per_image.items()}
    figures["images_per_s"] = {name: len(images) / total[f"{name}_ms"] * 1e3 for name in paths if name != "resize_only"}
    figures["image_speedup"] = total["baseline_ms"] / total["ours_ms"]
    figures["image_speedup_vs_direct"] = total["baseline_direct_ms"] / total["ours_ms"]
    figures["image_resize_share_of_ours"] = total["resize_only_ms"] / total["ours_ms"]

    times = {name: [] for name in ("ours", "baseline", "baseline_direct")}
    for _ in range(repeats):
        for name in times:
            times[name] += _seconds(paths[name], videos)
    seconds_of_video = video_clips * video_seconds
    figures["video_seconds_per_s"] = {name: seconds_of_video / statistics.median(t) for name, t in times.items()}
    figures["video_speedup"] = statistics.median(times["baseline"]) / statistics.median(times["ours"])
    figures["video_speedup_vs_direct"] = statistics.median(times["baseline_direct"]) / statistics.median(times["ours"])
    figures["video_setup"] = {"clips": video_clips, "seconds": video_seconds, "fps": video_fps,
                              "frame_size": [640, 360], "frames_per_group": 3}
    _print(figures)
    return figures


def _print(figures: dict) -> None:
    print(f"{'image':>16} {'baseline ms':>12} {'direct ms':>10} {'ours ms':>9} {'resize ms':>10} {'speed-up':>9}")
    for name, row in figures["per_image"].items():
        print(f"{name:>16} {row['baseline_ms']:12.1f} {row['baseline_direct_ms']:10.1f} {row['ours_ms']:9.1f} "
              f"{row['resize_only_ms']:10.1f} {row['baseline_ms'] / row['ours_ms']:8.2f}x")
    ips, vps = figures["images_per_s"], figures["video_seconds_per_s"]
    print(f"images/s: ours {ips['ours']:.1f}, baseline {ips['baseline']:.1f} ({figures['image_speedup']:.2f}x), "
          f"direct baseline {ips['baseline_direct']:.1f} ({figures['image_speedup_vs_direct']:.2f}x); "
          f"PIL resize = {100 * figures['image_resize_share_of_ours']:.0f}% of ours")
    print(f"video-seconds/s: ours {vps['ours']:.1f}, baseline {vps['baseline']:.1f} ({figures['video_speedup']:.2f}x), "
          f"direct baseline {vps['baseline_direct']:.1f} ({figures['video_speedup_vs_direct']:.2f}x)")


if __name__ == "__main__":
    run()
