"""runner.OutputFile: whole lines of any length, from a stored offset, in bounded memory."""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from klaudiod import safefs
from klaudiod.runner import MAX_LINE, READ_CHUNK, OutputFile

MiB = 1 << 20
NAME = "out.jsonl"


def line(size: int, tag: str = "x") -> bytes:
    """A JSON line of exactly size bytes (newline excluded), tagged so."""
    head = f'{{"tag":"{tag}","pad":"'.encode()
    tail = b'"}'
    if size < len(head) + len(tail):
        raise ValueError(f"a line of {size} bytes cannot hold its own header")
    return head + b"y" * (size - len(head) - len(tail)) + tail


def drain(out: OutputFile, final: bool = False) -> list[str]:
    """Every line read() gives until it gives none (as the runner's flush does)."""
    found: list[str] = []
    while lines := out.read(final):
        found += lines
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


def write(root: Path, data: bytes) -> None:
    (root / NAME).write_bytes(data)


def append(root: Path, data: bytes) -> None:
    with open(root / NAME, "ab") as handle:
        handle.write(data)


# Sizes around the read chunk and far beyond it; each line comes back whole and exact.
@pytest.mark.parametrize(
    "size",
    [
        40,
        READ_CHUNK - 1,  # its newline is the chunk's last byte
        READ_CHUNK,
        READ_CHUNK + 1,
        2 * READ_CHUNK,
        5 * MiB,
        MAX_LINE,  # the longest line kept
    ],
)
def test_a_line_of_any_length_comes_back_whole(root: Path, size: int) -> None:
    big = line(size, "big")
    before, after = line(50, "before"), line(60, "after")
    write(root, before + b"\n" + big + b"\n" + after + b"\n")
    out = OutputFile(root, NAME, 0)

    lines = drain(out)

    assert [len(x.encode()) for x in lines] == [50, size, 60]
    assert lines[1].encode() == big
    assert json.loads(lines[2])["tag"] == "after"
    assert out.offset == (root / NAME).stat().st_size


def test_empty_and_one_byte_lines(root: Path) -> None:
    write(root, b"\n" + b"7\n" + b"\n\n" + b" \n" + line(30) + b"\n" + b"8\n")
    out = OutputFile(root, NAME, 0)

    lines = drain(out)

    # Blank lines carry no event: skipped, yet the offset moves past them.
    assert lines == ["7", line(30).decode(), "8"]
    assert out.offset == (root / NAME).stat().st_size


def test_an_empty_or_missing_file_gives_nothing(root: Path) -> None:
    assert OutputFile(root, NAME, 0).read() == []
    assert OutputFile(root, NAME, 0).read(final=True) == []
    write(root, b"")
    out = OutputFile(root, NAME, 0)
    assert out.read(final=True) == []
    assert out.offset == 0


@pytest.mark.parametrize(
    "size",
    [
        MAX_LINE + 1,  # over by less than a chunk: its newline is in the chunk that crosses
        MAX_LINE + READ_CHUNK // 2,
        MAX_LINE + 2 * MiB + 17,
        3 * MAX_LINE,
    ],
)
def test_a_line_over_max_line_is_replaced_by_a_marker(root: Path, size: int) -> None:
    before, after = line(50, "before"), line(60, "after")
    write(root, before + b"\n" + b"z" * size + b"\n" + after + b"\n")
    out = OutputFile(root, NAME, 0)

    lines = drain(out)

    assert len(lines) == 3
    assert json.loads(lines[0])["tag"] == "before"
    assert json.loads(lines[1]) == {
        "type": "klaudio",
        "subtype": "line_dropped",
        "bytes": size + 1,
        "max": MAX_LINE,
    }
    assert json.loads(lines[2])["tag"] == "after"
    assert out.offset == 51 + size + 1 + 61


def test_a_dropped_line_moves_the_offset_past_it_even_when_it_ends_the_file(root: Path) -> None:
    size = MAX_LINE + MiB
    write(root, line(40) + b"\n" + b"z" * size)  # no newline yet: the agent is still writing
    out = OutputFile(root, NAME, 0)

    assert drain(out) == [line(40).decode()]
    assert out.offset == 41

    append(root, b"z\n")
    marker = drain(out)
    assert [json.loads(x)["subtype"] for x in marker] == ["line_dropped"]
    assert out.offset == 41 + size + 2


def test_a_partial_last_line_waits_for_its_newline_or_the_end(root: Path) -> None:
    first, second = line(100, "first"), line(3 * MiB, "second")
    write(root, first + b"\n" + second[: MiB + 5])
    out = OutputFile(root, NAME, 0)

    assert drain(out) == [first.decode()]
    assert out.offset == 101  # only complete lines move it

    append(root, second[MiB + 5 : 2 * MiB])
    assert drain(out) == []
    assert out.offset == 101

    append(root, second[2 * MiB :] + b"\n" + b'{"type":"tail"')
    assert drain(out) == [second.decode()]
    assert out.offset == 101 + len(second) + 1

    # final: the agent has exited, so an unterminated last line is all there will be.
    assert out.read(final=True) == ['{"type":"tail"']
    assert out.offset == (root / NAME).stat().st_size
    assert out.read(final=True) == []


def test_a_restart_from_the_stored_offset_neither_loses_nor_repeats(root: Path) -> None:
    lines = [line(200 + i, f"n{i}") for i in range(6)] + [line(2 * MiB + 3, "long")]
    data = b"".join(x + b"\n" for x in lines)
    write(root, data[: len(data) - MiB])  # the long line is half written
    out = OutputFile(root, NAME, 0)
    seen = drain(out)
    stored = out.offset
    assert seen == [x.decode() for x in lines[:6]]

    # The daemon restarts: a new reader starts at the stored offset, mid-file, while the
    # agent finishes the long line.
    write(root, data)
    again = OutputFile(root, NAME, stored)
    rest = drain(again)

    assert rest == [lines[6].decode()]
    assert again.offset == len(data)
    # A restart from an offset in the middle of the file reads the following lines only.
    middle = OutputFile(root, NAME, sum(len(x) + 1 for x in lines[:3]))
    assert drain(middle) == [x.decode() for x in lines[3:]]


def test_undecodable_bytes_are_replaced_not_fatal(root: Path) -> None:
    write(root, b'{"type":"t","text":"\xff\xfe"}\n' + line(30) + b"\n")
    out = OutputFile(root, NAME, 0)

    lines = drain(out)

    assert lines[0] == '{"type":"t","text":"\ufffd\ufffd"}'
    assert lines[1] == line(30).decode()
    assert out.offset == (root / NAME).stat().st_size


@pytest.mark.parametrize("kind", ["link-to-file", "link-to-environ", "fifo", "directory"])
def test_a_replaced_output_file_is_refused_not_read(root: Path, tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"type":"secret","marker":"OUTPUT-FILE-CANARY"}\n')
    run = root / "run"
    run.mkdir()
    target = run / NAME
    if kind == "link-to-file":
        target.symlink_to(secret)
    elif kind == "link-to-environ":
        target.symlink_to("/proc/self/environ")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    out = OutputFile(run, NAME, 0)

    with pytest.raises(safefs.Refused) as refused:
        out.read(final=True)

    assert NAME in str(refused.value)
    assert "CANARY" not in str(refused.value)
    assert out.offset == 0


def _peak_while(action: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert callable(action)
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_line_not_the_file(root: Path) -> None:
    # 50 MiB of short lines, read as the runner reads: each batch is persisted, then dropped.
    short = line(120, "short") + b"\n"
    count = (50 * MiB) // len(short)
    with open(root / NAME, "wb") as handle:
        for _ in range(count // 1000):
            handle.write(short * 1000)
    size = (root / NAME).stat().st_size
    assert size >= 49 * MiB
    out = OutputFile(root, NAME, 0)
    total = 0

    def read_all() -> None:
        nonlocal total
        while lines := out.read():
            total += len(lines)

    peak = _peak_while(read_all)

    assert total == (count // 1000) * 1000
    assert out.offset == size
    assert peak < 8 * MiB, f"reading {size} bytes of short lines peaked at {peak} bytes"


def test_memory_for_a_long_line_is_bounded_by_that_line(root: Path) -> None:
    size = 5 * MiB
    write(root, line(size) + b"\n" + line(40) + b"\n")
    out = OutputFile(root, NAME, 0)
    found: list[str] = []

    peak = _peak_while(lambda: found.extend(drain(out)))

    assert [len(x) for x in found] == [size, 40]
    found.clear()
    assert peak < 3 * size, f"a {size}-byte line peaked at {peak} bytes"


def test_memory_for_an_overlong_line_is_bounded_by_max_line(root: Path) -> None:
    size = 3 * MAX_LINE
    with open(root / NAME, "wb") as handle:
        for _ in range(size // MiB):
            handle.write(b"z" * MiB)
        handle.write(b"\n")
    out = OutputFile(root, NAME, 0)
    found: list[str] = []

    peak = _peak_while(lambda: found.extend(drain(out)))

    assert [json.loads(x)["bytes"] for x in found] == [size + 1]
    assert peak < MAX_LINE + 4 * MiB, f"a {size}-byte line peaked at {peak} bytes"
