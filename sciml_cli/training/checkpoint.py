"""Checkpoints: a plain dict of tensors and plain values, written atomically.

They load with ``torch.load(weights_only=True)``, so a checkpoint cannot run code. Each holds the
resolved config as YAML text, which is all ``sciml eval`` needs to rebuild the model, and a
SHA-256 checksum of everything else (every tensor's bytes, dtype and shape, every plain value),
verified on loading: a flipped bit in a weight or in the optimiser state is an error, not a
silently different result.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, SciMLError, SciMLWarning, disk_full, free_bytes, no_space

FORMAT = "sciml-checkpoint"
VERSION = 2  # 2: with a checksum; version 1 files (no checksum) still load, with a warning


class CheckpointWarning(SciMLWarning):
    """A checkpoint loaded whose integrity could not be checked."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers see the old or the new file,
    never a partial one. On failure (e.g. a full disk) the old file stays. The file's mode
    follows the umask, as a plain ``open`` would make it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); a result file gets the mode open() would give it
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # torch's zip writer does not say why a write failed: ask the file system, before the
        # partial file gives its space back
        full = no_space(err) or (isinstance(err, (RuntimeError, OSError))
                                 and (free_bytes(path.parent) or 0) < (1 << 20))
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full(path) from None
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checksum(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's contents but its ``checksum``: keys in sorted order, tensors by
    dtype, shape and bytes, plain values by ``repr``."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for k in sorted(value, key=repr):
                digest.update(repr(k).encode())
                feed(value[k])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for v in value:
                feed(v)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed({k: v for k, v in state.items() if k != "checksum"})
    return digest.hexdigest()


def save(path: Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "version": VERSION, **state}
    state["checksum"] = checksum(state)
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as err:
        raise SciMLError(f"could not write checkpoint {path}: {err.strerror or err}; the previous one is kept") from None


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # weights_only unpickling of a foreign file fails in many ways (IndexError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or foreign file): {first[:160]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sciml checkpoint")
    if state.get("version") not in (1, VERSION):
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, expected {VERSION}")
    if state["version"] == 1:
        warnings.warn(f"{path} predates checksums (checkpoint version 1): a damaged file cannot be told from "
                      "an intact one; the next checkpoint this run writes carries one", CheckpointWarning, stacklevel=2)
    elif state.get("checksum") != checksum(state):
        other = "best.pt" if path.name != "best.pt" else "last.pt"
        raise CheckpointError(f"{path} fails its checksum: the file changed after it was written (a damaged "
                              f"disk or copy); {other} in the same directory may be intact")
    return state


# -- random number generator states, in forms that load with weights_only=True ---------------
def rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
