"""Content-addressed artifact store: ``<root>/<sha256><suffix>``, written atomically, verified on every read.

Writes go to a temporary file in the same directory, are fsynced, renamed over the final name and the directory
is fsynced, so a crash leaves either no file or the whole file. Reads hash the bytes and refuse any mismatch with
:class:`ArtifactCorrupted`, naming the file and both hashes. No torch on this path (the live server uses it).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from srghn.controller.files import atomic_write
from srghn.errors import ArtifactCorrupted, RegistryError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ONNX_SUFFIX = ".onnx"
PARAMS_SUFFIX = ".npy"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Files named by the sha256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str, suffix: str) -> Path:
        """Where the artifact with this hash lives (whether or not it exists)."""
        if not SHA256_RE.match(sha256):
            raise RegistryError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / f"{sha256}{suffix}"

    def put(self, data: bytes, suffix: str) -> str:
        """Store ``data`` (idempotent: an intact existing copy is kept) and return its sha256."""
        digest = sha256_hex(data)
        path = self.path(digest, suffix)
        self.root.mkdir(parents=True, exist_ok=True)
        if path.exists() and sha256_hex(path.read_bytes()) == digest:
            return digest
        atomic_write(path, data)
        return digest

    def read(self, sha256: str, suffix: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``sha256``."""
        path = self.path(sha256, suffix)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {path} is missing (expected sha256 {sha256})") from None
        except OSError as exc:
            raise ArtifactCorrupted(f"artifact {path} cannot be read: {exc}") from exc
        actual = sha256_hex(data)
        if actual != sha256:
            raise ArtifactCorrupted(f"artifact {path} is corrupted: its bytes hash to sha256 {actual}, the registry "
                                    f"recorded {sha256}; refusing to load it")
        return data

    def read_unverified(self, sha256: str, suffix: str) -> bytes | None:
        """The raw bytes (for the integrity gate, which reports the mismatch itself); None if missing."""
        try:
            return self.path(sha256, suffix).read_bytes()
        except OSError:
            return None

    def verify(self, sha256: str, suffix: str) -> bool:
        """Whether the artifact exists and hashes to ``sha256``."""
        try:
            self.read(sha256, suffix)
        except ArtifactCorrupted:
            return False
        return True
