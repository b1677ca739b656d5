"""Crash-safe file writes and the .npz files of populations and repertoires (no torch here: the live server and
the torch-free commands import it).

A write goes to a temporary file in the same directory, is fsynced, renamed over the final name, and the
directory is fsynced: a crash leaves either the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from srghn.errors import CheckpointError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via temp -> fsync -> rename -> fsync(dir); ``mode``: the file's permissions
    (default: 0600, as the temporary file is made)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """``arrays`` and ``meta`` (as JSON) in one .npz file, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def read_npz(path: Path, fmt: str, keys: tuple[str, ...],
             also: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the JSON meta of a file :func:`write_npz` wrote in format ``fmt`` (or one of ``also``, older
    formats it still reads), with ``keys`` among the arrays; :class:`~srghn.errors.CheckpointError` otherwise."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such file") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable .npz archive ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: missing or malformed meta entry") from exc
    if meta.get("format") != fmt and meta.get("format") not in also:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {fmt!r}")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise CheckpointError(f"{path}: missing arrays {missing}")
    return arrays, meta
