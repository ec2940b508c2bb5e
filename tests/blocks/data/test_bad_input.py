"""One test per kind of bad input: each must fail with an error naming the file / line / sample, or
become a counted skip with its reason; none may crash a run or yield silently wrong pixels."""

from __future__ import annotations

import io
import json
import struct
import zlib

import av
import numpy as np
import pytest
from PIL import Image

from blocks.data.dataset import ProcessedDataset, SkipReport, SkippingCollate
from blocks.data.errors import MediaError, SampleError
from blocks.data.formats import OfficialJsonDataset
from blocks.data.image_io import load_image
from blocks.data.video import read_video
from media_helpers import StandInProcessor, write_video


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is a single tiny row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0\0"))
            + _png_chunk(b"IEND", b""))


# ---- images ---------------------------------------------------------------------------------------

def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(MediaError, match="corrupt.png") as info:
        load_image(path, where="train.jsonl:4")
    assert info.value.reason == "corrupt_image" and "train.jsonl:4" in str(info.value)


def test_truncated_image_fails_at_load_not_later(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(MediaError, match="truncated.jpg") as info:
        load_image(path)
    assert info.value.reason == "corrupt_image"


def test_zero_byte_image(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.png.*0 bytes") as info:
        load_image(path)
    assert info.value.reason == "empty_file"


def test_zero_size_image(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(_png_with_size(0, 5))
    with pytest.raises(MediaError, match="zero.png: cannot decode image") as info:  # Pillow refuses it on open
        load_image(path)
    assert info.value.reason == "corrupt_image"


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_size(10_000, 10_000))  # 10^8 pixels declared in 60 bytes
    with pytest.raises(MediaError, match=r"bomb.png: 10000x10000 = 100000000 pixels exceeds max_pixels") as info:
        load_image(path)
    assert info.value.reason == "too_large"
    # Past Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) Pillow refuses first: same error type.
    path.write_bytes(_png_with_size(100_000, 100_000))
    with pytest.raises(MediaError, match=r"bomb.png: .*exceeds") as info:
        load_image(path)
    assert info.value.reason == "too_large"
    # The limit is configurable and counts declared pixels.
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 30)).save(small)
    with pytest.raises(MediaError, match="exceeds max_pixels=899"):
        load_image(small, max_pixels=899)
    assert load_image(small, max_pixels=900).size == (30, 30)


def test_missing_image_file(tmp_path):
    with pytest.raises(MediaError, match="nope.png: file not found") as info:
        load_image(tmp_path / "nope.png", where="d.json:9")
    assert info.value.reason == "missing_file" and info.value.where == "d.json:9"


def test_cmyk_colours(tmp_path):
    path = tmp_path / "cmyk.jpg"
    # Pure cyan, magenta, yellow, 50 % black: RGB (0,255,255), (255,0,255), (255,255,0), (127,127,127).
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 128)]
    image = Image.new("CMYK", (32, 8))
    for k, ink in enumerate(inks):
        image.paste(ink, (8 * k, 0, 8 * k + 8, 8))
    image.save(path, quality=100)
    rgb = np.asarray(load_image(path)).astype(int)
    expected = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (127, 127, 127)]
    for k, colour in enumerate(expected):
        assert np.abs(rgb[4, 8 * k + 4] - colour).max() <= 6, (k, rgb[4, 8 * k + 4])


def test_palette_with_transparency_composites_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 0])  # index 0 red, index 1 black
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    image.save(path, transparency=1)  # the black entry is fully transparent
    assert np.asarray(load_image(path)).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_la_and_rgba_alpha_composites_on_white(tmp_path):
    la = Image.fromarray(np.array([[[0, 255], [0, 0], [0, 128]]], dtype=np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0, :, 0].tolist() == [0, 255, 127]
    rgba = Image.new("RGBA", (1, 1), (0, 0, 255, 64))
    rgba.save(tmp_path / "rgba.png")
    # 64/255 of blue over white: 255 * (1 - 64/255) = 191 for red/green.
    assert np.asarray(load_image(tmp_path / "rgba.png"))[0, 0].tolist() == [191, 191, 255]


def test_16bit_image_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    # Pillow's own convert("RGB") clips 1000 -> 255; scaling maps it to 4.
    assert np.asarray(load_image(path))[0, :, 1].tolist() == [0, 4, 128, 255]


def test_exif_rotation_is_applied(tmp_path):
    # Stored 4 wide x 2 high, red on the left half; orientation 6 = rotate 90 degrees clockwise to view.
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[:, :2] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    upright = np.asarray(load_image(path))
    assert upright.shape == (4, 2, 3)
    # Rotating clockwise puts the stored left half on top.
    assert upright[0, 0].tolist() == [255, 0, 0] and upright[3, 1].tolist() == [0, 0, 0]


# ---- videos ---------------------------------------------------------------------------------------

def test_unreadable_video_names_the_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="garbage.mp4") as info:
        read_video(path, fps=2, where="v.jsonl:2")
    assert info.value.reason == "corrupt_video" and info.value.where == "v.jsonl:2"


def test_empty_and_zero_frame_videos(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4: empty file") as info:
        read_video(empty, fps=2)
    assert info.value.reason == "empty_file"
    # A Matroska file cut right before its first cluster: valid header, a video stream, no frames.
    whole = write_video(tmp_path / "whole.mkv", n_frames=3, rate=10).read_bytes()
    header_only = tmp_path / "header_only.mkv"
    header_only.write_bytes(whole[:whole.find(bytes.fromhex("1F43B675"))])
    with pytest.raises(MediaError, match="header_only.mkv") as info:
        read_video(header_only, fps=2)
    assert info.value.reason in ("empty_video", "corrupt_video")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.mka"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(MediaError, match="sound.mka: no video stream") as info:
        read_video(path, fps=2)
    assert info.value.reason == "no_video_stream"


def test_missing_video_file(tmp_path):
    with pytest.raises(MediaError, match="absent.mp4: file not found") as info:
        read_video(tmp_path / "absent.mp4", fps=2)
    assert info.value.reason == "missing_file"


# ---- data files -----------------------------------------------------------------------------------

def _entry(sample_id, content="<image>\nq", **media):
    return {"id": sample_id, **media,
            "conversations": [{"role": "user", "content": content}, {"role": "assistant", "content": "a"}]}


def _jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_missing_file_in_an_entry_names_file_line_and_id(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_entry("s1", image="nowhere.png")])
    with pytest.raises(MediaError, match=r"\[d.jsonl:1\] sample 's1': .*nowhere.png: file not found"):
        OfficialJsonDataset(path)[0]


def test_malformed_jsonl_line_is_a_counted_skip(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = _jsonl(tmp_path / "d.jsonl", [_entry("s1", image="a.png"), "", '{"id": "s2", "conversations": [',
                                         _entry("s3", image="a.png")])
    data = OfficialJsonDataset(path)
    assert len(data) == 3  # the blank line is not an entry
    with pytest.raises(SampleError, match=r"\[d.jsonl:3\]: malformed JSON"):
        data[1]
    items = [ProcessedDataset(data, StandInProcessor())[k] for k in range(3)]
    batch = SkippingCollate(pad_id=0)(items)
    assert batch.sample_ids == ["s1", "s3"] and batch.skipped == [("d.jsonl:3", "malformed_json")]


def test_malformed_json_list_fails_at_construction_with_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": "b",, }\n]\n')
    with pytest.raises(SampleError, match=r"\[d.json:3\]: malformed JSON list"):
        OfficialJsonDataset(path)


@pytest.mark.parametrize("content, media, expected", [
    ("<image>\n<image>\nq", {"image": "a.png"}, "one image but 2 <image> placeholder"),
    ("q", {}, None),  # text only: fine
    ("<image>\nq", {}, "1 <image> placeholder.* but no 'image' field"),
    ("<image_00> <image_02>", {"image": {"<image_00>": "a.png", "<image_01>": "a.png"}},
     r"placeholder <image_02> has no entry"),
    ("<image_00> only", {"image": {"<image_00>": "a.png", "<image_01>": "a.png"}},
     r"2 image\(s\) but 1 referenced; never referenced: \['<image_01>'\]"),
    ("<video>\nq", {"image": "a.png"}, "1 <video> placeholder.* but no 'video' field"),
])
def test_placeholder_count_must_match_media(tmp_path, content, media, expected):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = _jsonl(tmp_path / "d.jsonl", [_entry("ok", "q"), _entry("p", content, **media)])
    if expected is None:
        assert OfficialJsonDataset(path)[1].images == []
        return
    with pytest.raises(SampleError, match=expected) as info:
        OfficialJsonDataset(path)[1]
    assert (info.value.where, info.value.sample_id, info.value.reason) == ("d.jsonl:2", "p", "placeholder_mismatch")


def test_sample_longer_than_the_limit_is_a_counted_skip(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_entry("short", "q"), _entry("long", "q" * 500)])
    dataset = ProcessedDataset(OfficialJsonDataset(path), StandInProcessor(max_tokens=100))
    report = SkipReport()
    report.update(SkippingCollate(pad_id=0)([dataset[0], dataset[1]]))
    assert report.counts == {"SampleTooLong": 1} and report.examples == {"SampleTooLong": ["long"]}
    assert "SampleTooLong" in report.table() and report.used == 1
