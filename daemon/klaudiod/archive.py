"""Checkpoint archives: a task's workspace and agent homes, written and restored link-safely.

An archive is a POSIX tar file:

    meta.json                      what the task looked like (agents' sessions, subtask states)
    workspace/...                  the workspace
    agents/<agent>/home/...        each agent's home: Claude Code's transcripts and session ids

It is written to a temporary name, fsynced and renamed, and only then recorded, so a crash
never leaves a torn newest checkpoint. Members come from safefs.scan (no link followed, links
archived as links, FIFOs and devices left out, credentials left out). Headers are packed here:
plain ustar, with a pax extended header before a member ustar cannot describe (a name or link
target too long or not ASCII, a file of 8 GiB or more), so that GNU tar and Python's tarfile
read every archive. Headers and file contents gather in page-aligned buffers that a helper
thread writes while the next ones fill, with O_DIRECT where the filesystem takes it: the data
is on the disk when the last buffer is written, so the final fsync is short, and a checkpoint
does not push what the host caches out of its page cache.

Restoring reads the headers with a parser of its own (ustar, and pax `x` and `g` records;
every header's checksum checked; a member's data must lie within the file), with a helper
thread asking the kernel to read the archive ahead, and extracts into a fresh directory with
the same care as writing: a member with an absolute path or "..", a hard link, a device, a
FIFO or any other kind of member (GNU long names and sparse files too), a member there twice,
or a path that would pass through a link is refused and named; a link is made as a link and
never followed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klaudio.errors import InvalidArgument
from klaudiod import safefs

META = "meta.json"
BLOCK = 512
# Never archived: credentials (a link to the run's secrets in fact, but never worth keeping).
LEFT_OUT = frozenset({".claude/.credentials.json"})
# Writing goes through BUFFERS page-aligned buffers of CHUNK bytes (a multiple of the page
# size); without O_DIRECT, the archive is fdatasync'ed after every FLUSH_EVERY bytes.
CHUNK = 8 << 20
BUFFERS = 3
FLUSH_EVERY = 64 << 20
_DIRECT = getattr(os, "O_DIRECT", 0)
# Restoring asks the kernel to read the archive up to READ_AHEAD bytes ahead, in steps.
READ_AHEAD = 64 << 20
_READ_STEP = 8 << 20
# The largest meta.json and pax header read into memory.
MAX_META = 16 << 20
MAX_PAX = 1 << 20
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# As safefs opens a scanned file: no link followed, and a planted FIFO does not block.
_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# ustar type flags and magic (POSIX.1-1988), and pax header types (POSIX.1-2001).
_REGULAR = (b"0", b"\0", b"7")  # a file (7: contiguous, a file to everyone else)
_DIRECTORY = b"5"
_SYMLINK = b"2"
_PAX = b"x"
_PAX_GLOBAL = b"g"
_USTAR = b"ustar\x0000"  # magic and version
_ZEROS = bytes(BLOCK)
_ZERO_RUN = memoryview(bytes(64 << 10))
_IDS = b"0000000\0" * 2  # uid and gid: 0, as tarfile writes them; no user or group names
# While the checksum is computed, its own field counts as eight spaces.
_SPACES = 8 * ord(" ")
_FIXED_SUM = _SPACES + sum(_USTAR)  # in every header written: the checksum and the magic
_MAX_OCTAL = 8**11  # what 11 octal digits hold: sizes up to 8 GiB, times up to the year 2242


class Damaged(InvalidArgument):
    """A checkpoint archive that cannot be restored (truncated, corrupt, or unsafe)."""


@dataclass
class Written:
    """What write() archived."""

    size: int
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def write(dest: Path, trees: list[tuple[str, Path]], meta: dict[str, Any]) -> Written:
    """Archive trees (member prefix, root) with meta into dest, atomically.

    Raises:
        FileExistsError: when dest exists already.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    fd = os.open(tmp, _NEW | os.O_TRUNC, 0o600)
    written = Written(0)
    sink: _Sink | None = None
    try:
        sink = _Sink(fd)
        out = _Tar(sink)
        out.data(META, json.dumps(meta, sort_keys=True).encode())
        for prefix, root in trees:
            out.directory(prefix)
            for entry in safefs.scan(root):
                if entry.path in LEFT_OUT:
                    continue
                if not out.entry(f"{prefix}/{entry.path}", entry):
                    written.skipped.append(f"{prefix}/{entry.path}")
        out.finish()
        sink.close()
        os.fsync(fd)
        written.files = out.count
    except BaseException:
        if sink is not None:
            sink.abandon()
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if dest.exists():
        tmp.unlink()
        raise FileExistsError(dest)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    written.size = dest.stat().st_size
    return written


class _Tar:
    """A POSIX tar writer: ustar headers packed by hand (pax when needed) into a _Sink."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.count = 0

    def data(self, name: str, content: bytes) -> None:
        self._header(name, 0o600, len(content), 0, b"0")
        self.sink.put(content)
        self.sink.zeros(-len(content) % BLOCK)

    def directory(self, name: str) -> None:
        self._header(f"{name}/", 0o755, 0, 0, _DIRECTORY)

    def entry(self, name: str, entry: safefs.Entry) -> bool:
        """Archive one scanned entry; False when it cannot be (a FIFO, or replaced)."""
        st = entry.stat
        mode = st.st_mode
        if stat.S_ISREG(mode):
            return self._file(name, entry)
        if stat.S_ISDIR(mode):
            self._header(f"{name}/", stat.S_IMODE(mode), 0, int(st.st_mtime), _DIRECTORY)
            return True
        if stat.S_ISLNK(mode):
            try:
                link = safefs.read_link(entry)
            except OSError:
                return False
            self._header(name, stat.S_IMODE(mode), 0, int(st.st_mtime), _SYMLINK, link)
            return True
        return False

    def _file(self, name: str, entry: safefs.Entry) -> bool:
        # Opened as safefs.open_entry opens it, but with one fstat, which gives the size too.
        try:
            src = os.open(entry.name, _SOURCE, dir_fd=entry.dir_fd)
        except OSError:
            return False  # gone, or swapped for a link (ELOOP) or a socket since the listing
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                return False  # swapped for something else since the listing
            size = st.st_size
            self._header(name, stat.S_IMODE(st.st_mode), size, int(st.st_mtime), b"0")
            self.sink.copy(src, size)
        finally:
            os.close(src)
        self.count += 1
        return True

    def _header(
        self, name: str, mode: int, size: int, mtime: int, kind: bytes, link: str = ""
    ) -> None:
        head = _ustar(name, mode, size, mtime, kind, link)
        if head is None:  # pax, as tarfile writes it
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.mtime = kind, mode, size, mtime
            info.linkname = link
            info.uname = info.gname = ""
            head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self.sink.put(head)

    def finish(self) -> None:
        self.sink.zeros(2 * BLOCK)


class _Sink:
    """The archive's bytes, gathered in page-aligned buffers that a helper thread writes.

    The file is written with O_DIRECT where its filesystem takes it: the buffers go to the
    disk while the next ones fill, so the final fsync has only the last buffer and the
    metadata left to write, and writing a checkpoint does not evict what the host has in its
    page cache. Elsewhere (or should a direct write be refused) the helper writes through the
    page cache and fdatasyncs after every FLUSH_EVERY bytes, to the same end.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunk = CHUNK
        self._direct = _set_direct(fd, True)
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[mmap.mmap | None] = queue.SimpleQueue()
        self._buffers = [mmap.mmap(-1, self._chunk) for _ in range(BUFFERS)]
        for spare in self._buffers[1:]:
            self._free.put(spare)
        self._buffer = self._buffers[0]
        self._view = memoryview(self._buffer)
        self._pos = 0
        self._unsynced = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="klaudio-archive", daemon=True
        )
        self._thread.start()

    def put(self, data: bytes | memoryview) -> None:
        """Append data."""
        end = self._pos + len(data)
        if end < self._chunk:
            self._view[self._pos : end] = data
            self._pos = end
            return
        with memoryview(data) as rest:
            while rest:
                room = min(len(rest), self._chunk - self._pos)
                self._view[self._pos : self._pos + room] = rest[:room]
                self._pos += room
                rest = rest[room:]
                if self._pos == self._chunk:
                    self._next()

    def zeros(self, count: int) -> None:
        """Append count zero bytes."""
        while count:
            part = min(count, len(_ZERO_RUN))
            self.put(_ZERO_RUN[:part])
            count -= part

    def copy(self, src: int, size: int) -> None:
        """Append exactly size bytes read from src, and the padding to a whole block.

        Should the file shrink meanwhile (an agent may be writing it), zeros make up the rest.
        """
        done = 0
        while done < size:
            end = min(self._chunk, self._pos + size - done)
            got = os.readv(src, [self._view[self._pos : end]])
            if got == 0:
                break
            self._pos += got
            done += got
            if self._pos == self._chunk:
                self._next()
        padding = size - done + (-size % BLOCK)
        end = self._pos + padding
        if end < self._chunk and padding < BLOCK:  # the usual case, made short
            self._view[self._pos : end] = _ZERO_RUN[:padding]
            self._pos = end
        else:
            self.zeros(padding)

    def _next(self) -> None:
        """Hand the full buffer to the helper; take an empty one."""
        if self._error is not None:
            raise self._error
        self._view.release()
        self._full.put(self._buffer)
        self._buffer = self._free.get()
        self._view = memoryview(self._buffer)
        self._pos = 0

    def close(self) -> None:
        """Write what is left, once the helper has written the rest; raise what failed in it."""
        self._stop()
        if self._error is not None:
            raise self._error
        if self._pos:
            # O_DIRECT wants whole sectors: the last part goes through the page cache.
            _set_direct(self._fd, False)
            _write_all(self._fd, self._view[: self._pos])
        self._release()

    def abandon(self) -> None:
        """After a failure: stop the helper (whose fd the caller is about to close)."""
        self._stop()
        self._release()

    def _stop(self) -> None:
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
            self._thread = None

    def _release(self) -> None:
        self._view.release()
        for buffer in self._buffers:
            with suppress(BufferError):  # a view still held by a traceback: freed with it
                buffer.close()
        self._buffers = []

    def _run(self) -> None:
        while (buffer := self._full.get()) is not None:
            if self._error is None:
                try:
                    self._write(buffer)
                except BaseException as error:  # raised in the writing thread
                    self._error = error
            self._free.put(buffer)

    def _write(self, buffer: mmap.mmap) -> None:
        with memoryview(buffer) as view:
            done = 0
            while done < self._chunk:
                try:
                    done += os.write(self._fd, view[done:])
                except OSError as error:
                    if error.errno != errno.EINVAL or not self._direct:
                        raise
                    self._direct = _set_direct(self._fd, False)  # refused: buffered, then
        if not self._direct:
            self._unsynced += self._chunk
            if self._unsynced >= FLUSH_EVERY:
                self._unsynced = 0
                os.fdatasync(self._fd)


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for fd; whether it is on (a filesystem may not take it)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _DIRECT if on else flags & ~_DIRECT)
    except OSError:
        return False
    return on and bool(_DIRECT)


def _ustar(name: str, mode: int, size: int, mtime: int, kind: bytes, link: str) -> bytes | None:
    """The ustar header block of a member, or None when ustar cannot hold it (pax can)."""
    if not (name.isascii() and link.isascii() and size < _MAX_OCTAL and 0 <= mtime < _MAX_OCTAL):
        return None
    raw = name.encode()
    prefix = b""
    if len(raw) > 100:
        # Split at the first "/" that leaves at most 100 bytes after it (as tarfile does).
        cut = raw.find(b"/", len(raw) - 101, len(raw) - 1)
        if cut <= 0 or cut > 155:
            return None
        prefix, raw = raw[:cut], raw[cut + 1 :]
    target = link.encode()
    if len(target) > 100:
        return None
    numbers = b"%07o\0%s%011o\0%011o\0" % (mode, _IDS, size, mtime)
    check = _FIXED_SUM + sum(raw) + sum(numbers) + kind[0] + sum(target) + sum(prefix)
    return b"".join(
        (
            raw.ljust(100, b"\0"),
            numbers,
            b"%06o\0 " % check,
            kind,
            target.ljust(100, b"\0"),
            _USTAR,
            bytes(80),  # user and group names, device numbers: none
            prefix.ljust(167, b"\0"),  # and 12 bytes unused
        )
    )


# Reading.


@dataclass(slots=True)
class Member:
    """One member of an archive, as its headers describe it."""

    name: str
    kind: bytes  # the ustar type flag
    mode: int
    mtime: float
    size: int
    link: str
    offset: int  # of its data in the archive

    def kind_name(self) -> str:
        """What a member that is neither a file, a directory nor a link is."""
        if self.kind == b"1":
            return "hard link"
        if self.kind in (b"3", b"4"):
            return "device"
        if self.kind == b"6":
            return "FIFO"
        return "special member"


def members(fd: int, end: int) -> Iterator[Member]:
    """The members of the archive open at fd, which is end bytes long, in order.

    Raises:
        ValueError: a header that is not one (its checksum, a number or a pax record wrong),
            a member whose data would lie beyond end, or no two zero blocks at the end; the
            message is one line.
    """
    offset = 0
    everyone: dict[bytes, bytes] = {}  # from pax global headers: for all members after
    extended: dict[bytes, bytes] = {}  # from pax extended headers: for the next member
    while True:
        block = os.pread(fd, BLOCK, offset)
        if len(block) < BLOCK:
            raise ValueError(f"it ends at byte {offset} without its end blocks: truncated")
        if block == _ZEROS:
            if os.pread(fd, BLOCK, offset + BLOCK) != _ZEROS:
                raise ValueError(f"a lone zero block at byte {offset}")
            if extended:
                raise ValueError(f"a pax header at its end describes no member (byte {offset})")
            return
        try:  # the numbers as written here, by tarfile and by GNU tar: read quicker
            if block[107] or block[135] or block[147] or block[154]:
                raise ValueError("not the usual terminators")
            mode, size = int(block[100:107], 8), int(block[124:135], 8)
            mtime: float = int(block[136:147], 8)
            stored = int(block[148:154], 8)
            if mode < 0 or size < 0 or mtime < 0 or stored < 0:
                raise ValueError("a sign")
        except ValueError:
            mode, size = _number(block, 100, 108, offset), _number(block, 124, 136, offset)
            mtime, stored = _number(block, 136, 148, offset), _number(block, 148, 156, offset)
        if stored != _checksum(block) and stored != _signed_sum(block):
            raise ValueError(f"a header with a bad checksum at byte {offset}")
        kind = block[156:157]
        data = offset + BLOCK
        if kind in (_PAX, _PAX_GLOBAL):
            if size > MAX_PAX or data + size > end:
                raise ValueError(f"a pax header of {size} bytes at byte {offset}")
            (everyone if kind == _PAX_GLOBAL else extended).update(
                _pax(os.pread(fd, size, data), offset)
            )
            offset = data + _blocks(size)
            continue
        name = block[:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0":  # POSIX: a prefix may come before the name
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        link = block[157:257].split(b"\0", 1)[0]
        if everyone or extended:
            pax = {**everyone, **extended}
            extended = {}
            name = pax.get(b"path", name)
            link = pax.get(b"linkpath", link)
            size = int(_pax_number(pax, b"size", size, offset))
            mtime = _pax_number(pax, b"mtime", mtime, offset)
            if any(key.startswith(b"GNU.sparse.") for key in pax):
                kind = b"S"  # a sparse file: refused as a special member
        text = name.decode("utf-8", "surrogateescape")
        if kind == b"\0" and text.endswith("/"):
            kind = _DIRECTORY  # a directory, as old tars wrote it
        if kind == _DIRECTORY:
            text = text.rstrip("/") or text
        if kind not in _REGULAR:
            offset = data
        elif data + size <= end:  # only a file's data follows its header
            offset = data + _blocks(size)
        else:
            raise ValueError(
                f"member {_show(text)} at byte {offset} has {size} bytes of data, beyond the "
                f"archive's end (byte {end}): truncated"
            )
        yield Member(
            text,
            kind,
            mode,
            mtime,
            size,
            link.decode("utf-8", "surrogateescape"),
            data,
        )


def _number(block: bytes, start: int, stop: int, offset: int) -> int:
    """The octal (or base-256) number in block[start:stop], of the header at offset."""
    field = block[start:stop]
    try:
        value = int(field.split(b"\0", 1)[0], 8)  # also takes spaces around the digits
    except ValueError:
        if field[0] == 0x80:  # base-256, as GNU tar writes numbers too big for octal
            return int.from_bytes(field[1:], "big")
        if field.strip(b" \0"):
            raise ValueError(f"a header with a bad number at byte {offset + start}") from None
        return 0  # blank
    if value < 0:
        raise ValueError(f"a header with a bad number at byte {offset + start}")
    return value


def _checksum(block: bytes) -> int:
    """The checksum of a header block: the sum of its bytes, its checksum field as spaces."""
    # Most bytes of a header are NULs: summing the others is quicker.
    return sum(block.translate(None, b"\0")) - sum(block[148:156]) + _SPACES


def _signed_sum(block: bytes) -> int:
    # Some old tars summed signed bytes; tarfile and GNU tar accept that too.
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return _checksum(block) - 256 * high


def _pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """The records of a pax header (LENGTH KEYWORD=VALUE and a newline each) at offset."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise ValueError(f"a bad pax record in the header at byte {offset}")
        length = int(digits)
        record = data[space + 1 : pos + length]
        if pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError(f"a bad pax record in the header at byte {offset}")
        keyword, value = record[:-1].split(b"=", 1)
        records[keyword] = value
        pos += length
    return records


def _pax_number(pax: dict[bytes, bytes], key: bytes, default: float, offset: int) -> float:
    """A number of a pax record: a size (digits) or a time (digits, maybe a sign and a fraction)."""
    if key not in pax:
        return default
    text = pax[key]
    digits = text.removeprefix(b"-").replace(b".", b"", 1) if key == b"mtime" else text
    if not digits.isdigit():
        raise ValueError(f"a bad pax {key.decode()} in the header at byte {offset}")
    return float(text) if key == b"mtime" else int(text)


def read_meta(path: Path) -> dict[str, Any]:
    """The meta.json of an archive.

    Raises:
        Damaged: when the archive cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Damaged(f"{path.name}: cannot be read: {exc.strerror}") from None
    try:
        return _meta(path, fd, members(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def _meta(path: Path, fd: int, found: Iterator[Member]) -> dict[str, Any]:
    try:
        first = next(found, None)
        if first is None or first.name != META:
            raise Damaged(f"{path.name}: no {META} at its start")
        if first.kind not in _REGULAR:
            raise Damaged(f"{path.name}: {META} is not a file")
        if first.size > MAX_META:
            raise Damaged(f"{path.name}: {META} is larger than {MAX_META} bytes")
        data = json.loads(os.pread(fd, first.size, first.offset))
    except (OSError, ValueError) as exc:
        raise Damaged(f"{path.name}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path.name}: {META} is not an object")
    return data


def extract(path: Path, size: int, dest: Path) -> dict[str, Any]:
    """Extract an archive into dest (created; its parent is the daemon's own); return meta.

    Raises:
        Damaged: naming the member refused or what is wrong with the archive; dest is then
            left for the caller to remove.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            raise Damaged(f"{path.name} is {actual} bytes, not the {size} written: truncated")
        os.mkdir(dest, 0o700)
        ahead = _ReadAhead(fd, size)
        try:
            found = members(fd, size)
            meta = _meta(path, fd, found)
            with _Extractor(dest, fd) as out:
                try:
                    for member in found:
                        ahead.reached(member.offset)
                        if member.name != META:
                            out.member(member)
                except ValueError as exc:
                    raise Damaged(f"{path.name}: cannot be read: {exc}") from None
        finally:
            ahead.stop()
    finally:
        os.close(fd)
    return meta


class _ReadAhead:
    """A helper thread asking the kernel to read the archive ahead of the extraction.

    An archive is not in page cache once written (O_DIRECT). Read on demand, in the small
    pieces the extraction asks for, it costs more than the extraction itself; read ahead in
    large steps, from another thread (so on another CPU), it costs little more than an archive
    in page cache. The thread stays at most READ_AHEAD bytes ahead.
    """

    def __init__(self, fd: int, end: int) -> None:
        self._fd = fd
        self._end = end
        self._reached = 0
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="klaudio-read-ahead", daemon=True)
        self._thread.start()

    def reached(self, offset: int) -> None:
        """The extraction is at offset."""
        if offset - self._reached >= _READ_STEP:
            self._reached = offset
            self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        advised = 0
        while advised < self._end and not self._stopped:
            if advised >= self._reached + READ_AHEAD:
                self._wake.wait()
                self._wake.clear()
                continue
            with suppress(OSError):
                os.posix_fadvise(self._fd, advised, _READ_STEP, os.POSIX_FADV_WILLNEED)
            advised += _READ_STEP


class _Extractor:
    """Makes archive members beneath dest, link-safely, one directory fd at a time."""

    def __init__(self, dest: Path, archive: int) -> None:
        self._archive = archive
        self._root = os.open(dest, _DIR)
        self._dirs: dict[tuple[str, ...], int] = {(): self._root}
        self._times: list[tuple[tuple[str, ...], int, float]] = []
        # What a file created here loses of the mode it is created with: a file whose mode
        # has none of these bits needs no fchmod.
        self._masked = _creation_mask(self._root)
        # The directory of the last member whose path was checked in full: its path, its
        # components and its fd.
        self._folder: str | None = None
        self._folder_names: tuple[str, ...] = ()
        self._folder_fd = self._root

    def __enter__(self) -> _Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        for names, mode, mtime in reversed(self._times):
            with suppress(OSError):
                fd = self._dir(names)
                os.chmod(fd, mode)
                os.utime(fd, (mtime, mtime))
        for fd in self._dirs.values():
            os.close(fd)

    def member(self, member: Member) -> None:
        parent, names = self._place(member.name)
        name = names[-1]
        kind = member.kind
        try:
            if kind in _REGULAR:
                self._file(parent, name, member)
            elif kind == _DIRECTORY:
                with suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                self._times.append((names, member.mode & 0o777, member.mtime))
            elif kind == _SYMLINK:
                if not member.link or "\0" in member.link:
                    raise Damaged(f"member {_show(member.name)} refused: a bad link target")
                os.symlink(member.link, name, dir_fd=parent)
            else:
                raise Damaged(f"member {_show(member.name)} refused: a {member.kind_name()}")
        except FileExistsError:
            raise Damaged(f"member {_show(member.name)} refused: it is there twice") from None

    def _place(self, path: str) -> tuple[int, tuple[str, ...]]:
        """The fd of the directory a member goes in, and its path's components, checked.

        They are checked as safefs.parts checks them. Members come directory by directory:
        when a member is in the same directory as the last one, only its own name needs
        checking, and the directory is the same.
        """
        cut = path.rfind("/")
        name = path[cut + 1 :]
        if (
            cut > 0  # not at the top, nor absolute
            and path[:cut] == self._folder
            and name not in ("", ".", "..")
            and "\0" not in name
            and "\n" not in name
            and path.isascii()
            and len(name) <= safefs.MAX_NAME
            and len(path) <= safefs.MAX_PATH
        ):
            return self._folder_fd, (*self._folder_names, name)
        try:
            names = safefs.parts(path)
        except safefs.Refused as exc:
            raise Damaged(f"member {exc} refused") from None
        parent = self._dir(names[:-1], path)
        if cut > 0 and names[-1] == name:  # then names[:-1] are the components of path[:cut]
            self._folder, self._folder_names, self._folder_fd = path[:cut], names[:-1], parent
        return parent, names

    def _file(self, parent: int, name: str, member: Member) -> None:
        mode = member.mode & 0o777
        fd = os.open(name, _NEW, mode, dir_fd=parent)
        try:
            done, size = 0, member.size
            while done < size:
                copied = os.sendfile(fd, self._archive, member.offset + done, size - done)
                if copied == 0:
                    raise Damaged(f"member {_show(member.name)} is cut short: truncated")
                done += copied
            if mode & self._masked:
                os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _dir(self, names: tuple[str, ...], member: str = "") -> int:
        """The fd of the directory names beneath dest; every step refuses a link."""
        if names in self._dirs:
            return self._dirs[names]
        parent = self._dir(names[:-1], member)
        try:
            fd = os.open(names[-1], _DIR, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(names[-1], 0o700, dir_fd=parent)
            fd = os.open(names[-1], _DIR, dir_fd=parent)
        except OSError:
            where = "/".join(names)
            raise Damaged(
                f"member {_show(member)} refused: it would be written through {where!r}, "
                "which is not a directory"
            ) from None
        if len(self._dirs) > 256:
            self._forget(names)
        self._dirs[names] = fd
        return fd

    def _forget(self, keep: tuple[str, ...]) -> None:
        # Members come in walk order: only the current directory's ancestors are needed.
        self._folder = None  # its fd may be closed
        for names in list(self._dirs):
            if names and names != keep[: len(names)]:
                os.close(self._dirs.pop(names))


def _creation_mask(folder: int) -> int:
    """The permission bits a file created in folder loses: the umask; 0o777 when unsure.

    Unsure: when folder has a default ACL (which replaces the umask), or the umask cannot be
    read (without os.umask, which would change it for every thread meanwhile).
    """
    try:
        os.getxattr(folder, "system.posix_acl_default")
        return 0o777
    except OSError as error:
        if error.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return 0o777
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def _show(name: str) -> str:
    return name.encode("unicode_escape").decode("ascii")[:300]


def _blocks(size: int) -> int:
    """size rounded up to whole blocks."""
    return size + (-size % BLOCK)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
