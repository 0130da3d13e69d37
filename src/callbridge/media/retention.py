"""Recordings held to a retention period and a disk quota.

``plan_cleanup`` is pure: given the files (name, size, modification time),
``now`` and the policy, it says which to delete: every one older than the
retention period, then the oldest until the rest fit the quota. Files still
being written (``in_use``) are never chosen. ``clean_recordings`` applies a
plan to a directory; the server runs it at start and then every
``CLEANUP_INTERVAL_S`` on a worker thread (it stats and unlinks files).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("callbridge.media.retention")

DAY_S = 86_400.0
# Hourly is enough for a retention counted in days; the quota is a ceiling, not an exact limit,
# so between runs it may be exceeded by an hour of recording (~115 MB per concurrent call).
CLEANUP_INTERVAL_S = 3600.0
# Only our own files: WAV recordings (and nothing else an operator may keep in the directory).
RECORDING_SUFFIX = ".wav"


@dataclass(frozen=True, slots=True)
class RecordingFile:
    name: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_days: float | None = None  # None: kept forever
    max_bytes: int | None = None  # None: no quota


def plan_cleanup(files: Iterable[RecordingFile], now: float, policy: RetentionPolicy,
                 in_use: Container[str] = ()) -> list[RecordingFile]:
    """The files to delete, oldest first."""
    candidates = sorted((f for f in files if f.name not in in_use), key=lambda f: (f.mtime, f.name))
    doomed: list[RecordingFile] = []
    kept: list[RecordingFile] = []
    cutoff = now - policy.retention_days * DAY_S if policy.retention_days is not None else None
    for f in candidates:
        (doomed if cutoff is not None and f.mtime < cutoff else kept).append(f)
    if policy.max_bytes is not None:
        # Files being written count against the quota but cannot be deleted.
        total = sum(f.size for f in kept) + sum(f.size for f in files if f.name in in_use)
        for f in kept:
            if total <= policy.max_bytes:
                break
            doomed.append(f)
            total -= f.size
    return doomed


def scan(directory: Path) -> list[RecordingFile]:
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.endswith(RECORDING_SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        found.append(RecordingFile(entry.name, stat.st_size, stat.st_mtime))
    return found


def clean_recordings(directory: Path, now: float, policy: RetentionPolicy,
                     in_use: Container[str] = ()) -> tuple[int, int]:
    """Delete what the policy says; returns (files, bytes) removed. Never raises on a vanished file."""
    removed = freed = 0
    for f in plan_cleanup(scan(directory), now, policy, in_use):
        try:
            (directory / f.name).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot delete recording %s: %s", f.name, exc)
            continue
        removed += 1
        freed += f.size
    if removed:
        log.info("deleted old recordings", extra={"files": removed, "bytes": freed})
    return removed, freed
