"""Checking dataset files against the checksums the library ships, once per file.

A dataset file that was altered or damaged on disk (a bad copy, a flipped bit, an edit by
hand) would otherwise be read as if it were the original, and every figure computed from it
would be quietly wrong. So a loader hands each file it reads, with its published SHA-256, to
:func:`verify`, which hashes the file and refuses it when the digest differs.

Hashing costs a read of the whole file, so a success is remembered in a small JSON record
(``<cache>/verified/files.json``), keyed by the file's absolute path and the ``stat`` fields
that any write changes: its size, its modification time and its change time (``ctime``, which
the kernel sets on every write and which, unlike ``mtime``, a user cannot set back). A file
that keeps all three is the file that was hashed; any other is hashed again. File systems
stamp times with a coarse clock, so a write in the same tick as the hash could keep all three:
a file changed less than :data:`SETTLED_SECONDS` before it was hashed is not remembered (the
"racily clean" entries of git's index, handled the same way). A record that cannot be read
or written is ignored: the check is then simply done every time.

Example::

    verify(root / "t10k-labels-idx1-ubyte.gz", SHA256["t10k-labels-idx1-ubyte.gz"],
           fix="delete it; MNIST downloads it again when online")
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from spiral_ppl.data.cache import cache_root
from spiral_ppl.io import atomic_path

#: How long a file must have been left alone before a successful check of it is remembered.
SETTLED_SECONDS = 2.0


class ChecksumError(ValueError):
    """A file's SHA-256 is not the one it should have."""


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _record_path() -> Path:
    return cache_root("verified") / "files.json"


def _signature(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _read_record() -> dict:
    try:
        record = json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _remember(path: Path, sha256: str, signature: list[int]) -> None:
    record = _read_record()
    record[str(path)] = {"sha256": sha256, "stat": signature}
    try:
        _record_path().parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(_record_path()) as temporary:
            Path(temporary).write_text(json.dumps(record, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only cache only means hashing again next time


def verify(path: str | Path, sha256: str, *, fix: str) -> Path:
    """Return ``path`` if its SHA-256 is ``sha256``; raise :class:`ChecksumError` otherwise.

    :param fix: what the user should do about a file that fails, e.g. where to get the original.
    """
    path = Path(path).resolve()
    signature = _signature(path)
    known = _read_record().get(str(path))
    if isinstance(known, dict) and known.get("sha256") == sha256 and known.get("stat") == signature:
        return path
    found = sha256_of(path)
    if found != sha256:
        raise ChecksumError(
            f"{path} is not the published file: its SHA-256 is {found}, expected {sha256}. It was altered or "
            f"damaged; {fix}."
        )
    # The signature taken before hashing, so a write during the hash is caught next time.
    if time.time_ns() - signature[2] > SETTLED_SECONDS * 1e9:
        _remember(path, sha256, signature)
    return path

