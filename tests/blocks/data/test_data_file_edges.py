"""Data files a new user's tools write: empty files, Unicode line separators, byte-order marks, one bad
byte, a top level that is not a list, duplicate ids, empty answers. Each is a clear error naming the
file (and line), or a counted skip; never a crash mid-run or silently wrong data (issue 16)."""

from __future__ import annotations

import json
import logging

import pytest

from blocks.data.dataset import ProcessedDataset, Skip, SkippingCollate, first_usable
from blocks.data.errors import SampleError
from blocks.data.formats import OfficialJsonDataset
from blocks.data.processor import MiniCPMVProcessor, ProcessorConfig
from blocks.data.tokenizer import tiny_tokenizer
from media_helpers import StandInProcessor


def _entry(sample_id: str, answer: str = "a", question: str = "q") -> dict:
    return {"id": sample_id, "conversations": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}]}


def _line(entry: dict) -> str:
    return json.dumps(entry, ensure_ascii=False)


@pytest.mark.parametrize("text", ["", "\n  \n\t\n", "[]", "[\n]\n"])
def test_a_file_with_no_entries_is_refused_naming_it(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(SampleError, match=r"no samples in .*empty.jsonl") as info:
        OfficialJsonDataset(path)
    assert info.value.reason == "no_samples"


def test_a_file_whose_every_entry_is_bad_stops_with_the_reasons(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "conversations": [\n"a string"\n{"id": ["c"]}\n')
    with pytest.raises(SampleError, match=r"no usable samples in .*bad.jsonl: all 3 entries are bad") as info:
        OfficialJsonDataset(path)
    assert "malformed_json" in str(info.value) and "bad_entry  " in str(info.value)  # the table of reasons


def test_a_corpus_whose_every_sample_is_skipped_stops_before_training(tmp_path):
    lines = [{**_entry(f"s{k}"), "image": f"missing{k}.png"} for k in range(3)]  # entries parse; media are absent
    (tmp_path / "d.jsonl").write_text("".join(_line(e) + "\n" for e in lines))
    dataset = ProcessedDataset(OfficialJsonDataset(tmp_path / "d.jsonl"), StandInProcessor())
    with pytest.raises(SampleError, match=r"no usable samples in corpus 'mine': all 3 were skipped") as info:
        first_usable(dataset, "mine")
    assert "missing_file" in str(info.value) and "s0, s1, s2" in str(info.value)
    # One usable sample after bad ones is enough, and processing stops at it.
    (tmp_path / "d.jsonl").write_text("".join(_line(e) + "\n" for e in [*lines, _entry("ok"), *lines]))
    assert first_usable(ProcessedDataset(OfficialJsonDataset(tmp_path / "d.jsonl"), StandInProcessor()),
                        "mine").sample_id == "ok"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_jsonl_lines_end_only_at_newline(tmp_path, separator):
    path = tmp_path / "d.jsonl"
    path.write_text(_line(_entry("a", answer=f"one{separator}two")) + "\r\n" + _line(_entry("b")) + "\n",
                    encoding="utf-8", newline="")
    data = OfficialJsonDataset(path)
    assert len(data) == 2
    assert data[0].conversations[1]["content"] == f"one{separator}two"
    assert (data[1].id, data.where(1)) == ("b", "d.jsonl:2")


@pytest.mark.parametrize("name, body, first_line", [
    ("d.jsonl", lambda: _line(_entry("a")) + "\n" + _line(_entry("b")) + "\n", 1),
    ("d.json", lambda: json.dumps([_entry("a"), _entry("b")], indent=1), 2),
])
def test_a_byte_order_mark_costs_nothing(tmp_path, name, body, first_line):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body().encode())
    data = OfficialJsonDataset(path)
    assert [data[k].id for k in range(len(data))] == ["a", "b"] and data.where(0) == f"{name}:{first_line}"


def test_an_invalid_utf8_byte_skips_its_line_only(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [_line(_entry("a")).encode(), _line(_entry("b", answer="caf\xe9")).encode("latin-1"),
             _line(_entry("c", answer="café")).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = OfficialJsonDataset(path)
    assert len(data) == 3 and data[0].id == "a" and data[2].conversations[1]["content"] == "café"
    with pytest.raises(SampleError, match=r"\[d.jsonl:2\]: invalid UTF-8 byte 0xe9 at column \d+") as info:
        data[1]
    assert info.value.reason == "invalid_utf8"
    batch = SkippingCollate(pad_id=0)([ProcessedDataset(data, StandInProcessor())[k] for k in range(3)])
    assert batch.sample_ids == ["a", "c"] and batch.skipped == [("d.jsonl:2", "invalid_utf8")]


def test_an_invalid_byte_inside_a_json_list_names_its_own_line(tmp_path):
    path = tmp_path / "d.json"
    text = json.dumps([_entry("a"), _entry("b", answer="BAD")], indent=1).encode()
    path.write_bytes(text.replace(b"BAD", b"\xff"))
    data = OfficialJsonDataset(path)
    bad_line = text[:text.index(b"BAD")].count(b"\n") + 1
    with pytest.raises(SampleError, match=rf"\[d.json:{bad_line}\]: invalid UTF-8 byte 0xff"):
        data[1]
    assert data[0].id == "a"


@pytest.mark.parametrize("value, kind", [
    ({"data": [_entry("a")]}, r"one JSON object \(keys \['data'\]\)"),
    ("samples", "a JSON str"),
])
def test_a_top_level_that_is_not_a_list_says_what_was_expected(tmp_path, value, kind):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(value, indent=2))
    with pytest.raises(SampleError, match=rf"\[.*d.json\]: expected a JSON list of samples, or JSONL .*holds {kind}"):
        OfficialJsonDataset(path)


def test_one_line_jsonl_with_one_sample_is_still_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(_line(_entry("only")) + "\n")
    assert OfficialJsonDataset(path)[0].id == "only"


def test_duplicate_ids_warn_once_per_file_or_refuse(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(_line(_entry(i)) + "\n" for i in ["a", "b", "a", "c", "b", "a"]))
    with caplog.at_level(logging.WARNING):
        data = OfficialJsonDataset(path)
    warnings = [r.getMessage() for r in caplog.records if "more than one entry" in r.getMessage()]
    assert len(warnings) == 1 and len(data) == 6
    assert "2 sample id(s) used by more than one entry: 'a' (lines 1, 3, 6), 'b' (lines 2, 5)" in warnings[0]
    with pytest.raises(SampleError, match=r"d.jsonl\]: 2 sample id\(s\) used by more than one entry") as info:
        OfficialJsonDataset(path, duplicate_ids="error")
    assert info.value.reason == "duplicate_ids"
    with pytest.raises(ValueError, match="duplicate_ids must be one of"):
        OfficialJsonDataset(path, duplicate_ids="ignore")


def test_an_empty_assistant_turn_is_a_counted_skip_naming_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    entries = [_entry("full", answer="A cat."), _entry("empty", answer=""), _entry("blank", answer=" \n ")]
    path.write_text("".join(_line(e) + "\n" for e in entries))
    tokenizer = tiny_tokenizer(["What is it? A cat."] * 20, vocab_size=300, cache_dir=tmp_path / "tok")
    processor = MiniCPMVProcessor(tokenizer, ProcessorConfig(tokens_per_group=4))
    items = [ProcessedDataset(OfficialJsonDataset(path), processor)[k] for k in range(3)]
    assert items[0].sample_id == "full"
    for item, line in zip(items[1:], (2, 3)):
        assert isinstance(item, Skip) and item.reason == "empty_answer"
        assert f"[d.jsonl:{line}]" in item.message and "assistant turn 1 is empty" in item.message
    # For inference the (empty) final assistant turn is dropped, so the same record is fine there.
    assert processor(OfficialJsonDataset(path)[1], mode="inference").num_tokens > 0
