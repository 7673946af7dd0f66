"""The records of a zip archive (``torch.save`` files, TorchScript archives), checked against the file.

The central directory is parsed by Python's ``zipfile``; where each record's bytes start is read from the
record's own local header (never assumed from torch's writer layout), and every record must lie inside the
file. Stored records can be mapped in place; deflated ones are inflated, never to more than they declare,
and that never past what deflate can produce (about 1032:1); other methods and encrypted records are refused.
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

from modscope.errors import CheckpointError

STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED

#: the most deflate can expand (each 258-byte match costs at least 2 bits), plus room for a tiny record
_MAX_RATIO = 1032
_SLACK = 1024
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # the 30-byte local file header
_LOCAL_MAGIC = b"PK\x03\x04"


def printable(name: str, limit: int = 80) -> str:
    """A name from a file, safe to put in a one-line message (control characters escaped, length capped)."""
    text = name.encode("unicode_escape").decode("ascii") if not name.isprintable() else name
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Record:
    """One archive member: where its bytes start in the file (after its local header), how it is stored."""

    name: str
    data_offset: int
    size: int  # uncompressed
    compressed_size: int
    method: int
    crc: int

    @property
    def stored(self) -> bool:
        return self.method == STORED


class ZipArchive:
    """The validated records of a zip file, by name; ``read_bytes`` returns a record's (inflated) content."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        try:
            self.size = os.fstat(self._open()).st_size
            self.records = self._read_directory()
        finally:
            self.close()  # a descriptor is held only while reading (a sharded checkpoint may have hundreds)

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise CheckpointError(f"cannot read {self.path}: {exc.strerror}") from None
        return self._fd

    def _read_directory(self) -> dict[str, Record]:
        try:
            with open(self.path, "rb") as f, zipfile.ZipFile(f) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error, OSError,
                NotImplementedError) as exc:  # fmt: skip
            raise CheckpointError(f"{self.path} is truncated or corrupt: its zip central directory cannot be read ({exc})")
        records: dict[str, Record] = {}
        for info in infos:
            if info.filename in records:
                raise CheckpointError(f"{self.path} is corrupt: the zip archive names the record {printable(info.filename)} twice")
            records[info.filename] = self._record(info)
        return records

    def _record(self, info: zipfile.ZipInfo) -> Record:
        where = f"{self.path}: zip record {printable(info.filename)}"
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted; modscope cannot read it")
        if info.compress_type not in (STORED, DEFLATED):
            raise CheckpointError(
                f"{where} is compressed with zip method {info.compress_type}; only stored and deflated records can "
                "be read (re-save the file with torch.save)"
            )
        if not 0 <= info.header_offset < self.size:
            raise CheckpointError(f"{where} starts at offset {info.header_offset}, outside the {self.size}-byte file (corrupt archive)")
        header = self.pread(info.header_offset, _LOCAL.size)
        if len(header) < _LOCAL.size or header[:4] != _LOCAL_MAGIC:
            raise CheckpointError(f"{where} has no local header at offset {info.header_offset} (corrupt archive)")
        fields = _LOCAL.unpack(header)
        name_len, extra_len = fields[-2], fields[-1]
        local_name = self.pread(info.header_offset + _LOCAL.size, name_len)
        if local_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") != info.orig_filename:
            raise CheckpointError(f"{where}: its local header names another record ({local_name[:60]!r}; corrupt archive)")
        data_offset = info.header_offset + _LOCAL.size + name_len + extra_len
        if data_offset + info.compress_size > self.size:
            raise CheckpointError(
                f"{where} claims {info.compress_size} bytes at offset {data_offset}, past the end of the "
                f"{self.size}-byte file (truncated?)"
            )
        if info.compress_type == STORED and info.file_size != info.compress_size:
            raise CheckpointError(
                f"{where} is stored uncompressed but declares {info.file_size} bytes in {info.compress_size} (corrupt archive)"
            )
        if info.compress_type == DEFLATED and info.file_size > info.compress_size * _MAX_RATIO + _SLACK:
            raise CheckpointError(
                f"{where} declares {info.file_size} bytes from {info.compress_size} compressed, more than deflate can "
                "produce (corrupt or hostile archive)"
            )
        return Record(info.filename, data_offset, info.file_size, info.compress_size, info.compress_type, info.CRC)

    def pread(self, offset: int, nbytes: int) -> bytes:
        fd, chunks, done = self._open(), [], 0
        while done < nbytes:
            got = os.pread(fd, nbytes - done, offset + done)
            if not got:
                break
            chunks.append(got)
            done += len(got)
        return b"".join(chunks)

    def read_bytes(self, name: str, *, limit: int | None = None, what: str = "record") -> bytes:
        """The record's content (inflated when deflated, its CRC checked); refused past ``limit`` bytes."""
        record = self.records[name]
        if limit is not None and record.size > limit:
            raise CheckpointError(
                f"{self.path}: its {what} {printable(name)} is {record.size} bytes uncompressed, over modscope's limit of "
                f"{limit} bytes (not read)"
            )
        raw = self.pread(record.data_offset, record.compressed_size)
        if len(raw) < record.compressed_size:
            raise CheckpointError(f"{self.path} ends early inside zip record {printable(name)} (truncated?)")
        if record.stored:
            return raw
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, record.size + 1)
        except zlib.error as exc:
            raise CheckpointError(f"{self.path}: zip record {printable(name)} does not inflate ({exc}; corrupt archive)") from None
        if len(data) != record.size or zlib.crc32(data) != record.crc:
            raise CheckpointError(
                f"{self.path}: zip record {printable(name)} inflates to other bytes than its header declares "
                f"({len(data)}{'+' if len(data) > record.size else ''} bytes, {record.size} declared; corrupt archive)"
            )
        return data

    def root(self, marker: str = "data.pkl") -> str:
        """The folder every record lives under (torch writes ``<name>/data.pkl``), with its trailing slash."""
        found = [n for n in self.records if n.endswith("/" + marker) and n.count("/") == 1]
        if len(found) != 1:
            detail = "none" if not found else f"{len(found)}"
            raise CheckpointError(f"{self.path} is not a torch archive: expected one <folder>/{marker} record, found {detail}")
        return found[0][: -len(marker)]

    def close(self) -> None:
        """Release the descriptor (reads reopen the file)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "ZipArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
