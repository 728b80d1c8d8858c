"""Content-addressed blob store on disk: a blob's name is the hex SHA-256 of its bytes.

Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash leaves either the whole blob or nothing. Reads verify the digest, so
a corrupted file is reported instead of being served.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobCorrupted(Exception):
    """A stored blob no longer matches its name (disk corruption or tampering)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs under ``root/ab/abcdef...`` named by their SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, digest: str) -> Path:
        if not _DIGEST_RE.match(digest):
            raise ValueError(f"not a hex SHA-256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its digest."""
        digest = sha256_hex(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        logger.debug("stored blob %s (%d bytes)", digest, len(data))
        return digest

    def get(self, digest: str) -> bytes:
        """The blob named ``digest``; ``KeyError`` if absent, ``BlobCorrupted`` if altered."""
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        if sha256_hex(data) != digest:
            raise BlobCorrupted(f"blob {digest} at {path} does not match its digest")
        return data

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, str)
            and bool(_DIGEST_RE.match(digest))
            and (self._path(digest).exists())
        )
