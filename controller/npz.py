"""Versioned .npz files: named arrays and a JSON ``meta`` entry that names the format (populations, policies,
repertoires). Torch-free, so the commands that only read them stay light."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from srghn.controller.files import atomic_write
from srghn.errors import CheckpointError


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
