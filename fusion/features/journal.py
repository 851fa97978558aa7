"""Atomic in-place updates of a file through an undo journal (for h5 outputs written by h5py).

HDF5 updates its metadata in place, so a process killed while it writes can leave a file that no
longer opens (measured: 8 kill -9 of an appending h5py process were enough). ``JournaledFile`` is
the file object h5py writes through: before it overwrites any byte that was part of the file at
the last commit, it appends the old bytes to ``<file>.journal``. ``commit()`` makes the current
content the new committed state (by deleting the journal); reopening a file whose journal exists
rolls it back to its last commit: journaled bytes restored, later appends cut off. New content
is appended, never copied, so a commit costs the size of what changed.
"""

import io
import os
import struct
from pathlib import Path

HEADER = struct.Struct("<Q")  # the committed size of the file
RECORD = struct.Struct("<QQ")  # offset, length; followed by the old bytes


def journal_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".journal")


def roll_back(path: Path) -> bool:
    """Restore ``path`` to its last commit if a journal is left; True if it rolled back."""
    journal = journal_path(path)
    if not journal.exists():
        return False
    data = journal.read_bytes()
    if len(data) >= HEADER.size and Path(path).exists():
        (committed_size,) = HEADER.unpack_from(data)
        records, position = [], HEADER.size
        while position + RECORD.size <= len(data):
            offset, length = RECORD.unpack_from(data, position)
            start = position + RECORD.size
            if start + length > len(data):
                break  # a record cut short: the overwrite it protects never happened
            records.append((offset, data[start:start + length]))
            position = start + length
        with open(path, "r+b") as fd:
            for offset, old in reversed(records):  # the oldest copy of a byte wins
                fd.seek(offset)
                fd.write(old)
            fd.truncate(committed_size)
            fd.flush()
            os.fsync(fd.fileno())
    # A journal without a complete header was cut before the first write of its transaction.
    journal.unlink()
    return True


class JournaledFile(io.RawIOBase):
    """A read/write file object whose changes since the last ``commit()`` can be rolled back."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        roll_back(self.path)
        self.file = open(self.path, "r+b" if self.path.exists() else "w+b")
        self.committed_size = os.fstat(self.file.fileno()).st_size
        self.journal = None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()

    def readinto(self, buffer):
        return self.file.readinto(buffer)

    def read(self, size=-1):
        return self.file.read(size)

    def _save(self, start: int, end: int) -> None:
        """Journal the committed bytes [start, end) before they change."""
        if self.journal is None:
            self.journal = open(journal_path(self.path), "wb")
            self.journal.write(HEADER.pack(self.committed_size))
        end = min(end, self.committed_size)
        if start >= end:
            self.journal.flush()
            return
        position = self.file.tell()
        self.file.seek(start)
        old = self.file.read(end - start)
        self.file.seek(position)
        self.journal.write(RECORD.pack(start, len(old)) + old)
        self.journal.flush()  # in the journal before the file changes

    def write(self, data):
        position = self.file.tell()
        self._save(position, position + len(data))
        return self.file.write(data)

    def truncate(self, size=None):
        size = self.file.tell() if size is None else size
        self._save(size, self.committed_size)
        return self.file.truncate(size)

    def flush(self):
        self.file.flush()

    def commit(self) -> None:
        """Everything written so far becomes the state a rollback returns to."""
        self.file.flush()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
            journal_path(self.path).unlink()
        self.committed_size = os.fstat(self.file.fileno()).st_size

    def close(self):
        if not self.closed:
            super().close()
            self.file.close()
            if self.journal is not None:
                self.journal.close()  # left in place: the next opening rolls back
