"""Carry an unfinished unit's run folder to another machine through git.

A unit's big files live in ``runs/<unit>/``, which is never committed; a search of several
hours cut off by the end of a sitting would start over on a fresh machine. This module
keeps a small, consistent copy of each unfinished run folder in ``carry/<unit>/``, which
is committed with the rest of the work folder (``benchmarks/commit_results.sh`` does it
every 30 minutes), and puts it back before the unit runs on a machine without the folder:

* :func:`snapshot` copies a run folder as it was at one instant: the SQLite reward cache
  through SQLite's backup API (its write-ahead log holds the newest rewards, so copying
  the file would lose them), every other file as it is, and the copy is kept only if no
  file of the folder changed while it was taken (otherwise taken again). The copy is
  then a state that a kill at that instant would have left, which every unit resumes.
  TensorBoard logs are not carried (``metrics_*.csv`` holds the same numbers), and a
  pruning loop's per-step checkpoint (:data:`LOOPS`) only when asked, at the end of a
  sitting.
* Files over ``limit`` bytes are left out when a resume recomputes them (:data:`OPTIONAL`:
  partial and finished trainings); a larger file of any other kind means the unit is not
  carried at all, since its copy could not be resumed.
* :func:`restore` puts a carried copy in place when the run folder is missing or older
  than the folder the copy was made from, and :func:`discard` removes it once the unit
  has finished.

Command line (what ``benchmarks/commit_results.sh`` runs)::

    python -m n2n_env.paper.carry WORK [--every SECONDS] [--limit BYTES] [--loops]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from n2n_env.paper.units import result_file

__all__ = ["DEFAULT_LIMIT", "LOOPS", "MANIFEST", "OPTIONAL", "Carried", "carry_dir",
           "discard", "main", "restore", "snapshot", "snapshot_unfinished"]

FORMAT = "n2n-paper-carry-v1"
MANIFEST = "carry.json"
"""The file in ``carry/<unit>/`` that describes the copy (not part of the run folder)."""
DEFAULT_LIMIT = 20_000_000
"""Bytes: larger files are left out (:data:`OPTIONAL`) or stop the unit's copy."""
OPTIONAL = ("*.partial", "finetune_*.pt", "seed-*")
"""Files a resume recomputes when they are missing: a training's per-epoch state, a
fine-tuned student, a pruning seed's files."""
SKIPPED = ("tensorboard",)
"""Top-level folders never carried."""
LOOPS = ("*.loop.pt",)
"""Files carried only with ``loops=True``: a pruning loop's checkpoint is as large as the
network and rewritten at every step, so committing it every half hour would add tens of MB
to the repository each time. Carried once, at the end of a sitting, it saves a fresh
machine the loop's steps so far (hours at full width); without it, the pruning seed's loop
starts over (the copy stays consistent either way)."""
DATABASES = ("*.sqlite",)
"""Files copied through SQLite's backup API; their ``-wal`` and ``-shm`` files are not copied."""
ATTEMPTS = 5


@dataclass(frozen=True)
class Carried:
    """What :func:`snapshot` did with one run folder."""

    unit: str
    copied: bool
    """Whether ``carry/<unit>`` now holds a fresh copy."""
    note: str
    """What was copied (files, bytes, what was left out), or why nothing was."""


def carry_dir(work: Path, unit_id: str) -> Path:
    """``carry/<unit>``: the committed copy of an unfinished unit's run folder."""
    return work / "carry" / unit_id


def _is_database_side_file(name: str) -> bool:
    """A database's write-ahead log, shared-memory index or rollback journal."""
    stem, _, suffix = name.rpartition("-")
    return suffix in ("wal", "shm", "journal") and _matches(stem, DATABASES)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether the file name ``name`` matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _files(run: Path, loops: bool) -> list[Path]:
    """The files of ``run`` that make up its state, in a stable order (with
    :data:`LOOPS` only when ``loops``)."""
    found = []
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if (not path.is_file() or relative.parts[0] in SKIPPED
                or any(part.startswith(".") for part in relative.parts)
                or (not loops and _matches(path.name, LOOPS))
                or _is_database_side_file(path.name)):
            continue
        found.append(path)
    return found


def _stamps(run: Path, loops: bool) -> dict[str, tuple[int, int, int]]:
    """Modification time, size and inode of every file that a copy could hold (a
    database's log included; the inode tells a file replaced through a rename within one
    clock tick): a file not carried neither asks for a new copy nor spoils one."""
    stamps = {}
    for path in run.rglob("*"):
        if (path.is_file() and not path.name.endswith("-shm")  # -shm changes on reads
                and (loops or not _matches(path.name, LOOPS))):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: a change
                info = path.stat()
                stamps[path.relative_to(run).as_posix()] = (info.st_mtime_ns, info.st_size,
                                                            info.st_ino)
    return stamps


def _newest(stamps: dict[str, tuple[int, int, int]]) -> int:
    """When the run last wrote: its newest file, counting a database's log only when it
    holds something (reading the database, as a copy does, creates an empty one)."""
    return max((stamp[0] for name, stamp in stamps.items()
                if not (name.endswith("-wal") and stamp[1] == 0)), default=0)


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database ``source``, its write-ahead log included."""
    # read-only: never checkpoints the log
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(run: Path, files: Sequence[Path], target: Path) -> None:
    for path in files:
        destination = target / path.relative_to(run)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if _matches(path.name, DATABASES):
            _backup(path, destination)
        else:
            shutil.copyfile(path, destination)


def _seconds(run: Path, stamps: dict[str, tuple[int, int, int]]) -> float | None:
    """The unit's wall time up to its last write: the seconds ``unit.json`` recorded when
    the sitting began, plus the time from then to the newest file."""
    try:
        saved = json.loads((run / "unit.json").read_text())
        began = stamps["unit.json"][0]
        return float(saved["seconds"]) + max(0, _newest(stamps) - began) / 1e9
    except (OSError, ValueError, KeyError, TypeError):
        return None


def snapshot(run: Path, target: Path, *, limit: int = DEFAULT_LIMIT,
             loops: bool = False) -> Carried:
    """Copy the run folder ``run`` to ``target`` (replaced only once the copy is complete),
    with a pruning loop's checkpoint when ``loops`` (:data:`LOOPS`).

    Returns what was done; nothing is written when a file that a resume needs is over
    ``limit`` bytes, or when the folder kept changing over :data:`ATTEMPTS` tries.
    """
    unit = run.name
    for _ in range(ATTEMPTS):
        before = _stamps(run, loops)
        files, left_out = [], []
        for path in _files(run, loops):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: copied again
                if path.stat().st_size <= limit:
                    files.append(path)
                elif _matches(path.name, OPTIONAL):
                    left_out.append(path.relative_to(run).as_posix())
                else:
                    return Carried(unit, False, f"not carried: {path.name} is "
                                   f"{path.stat().st_size:,} bytes, over the limit of "
                                   f"{limit:,}, and a resume needs it")
        pending = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(pending, ignore_errors=True)
        pending.mkdir(parents=True)
        try:
            _copy(run, files, pending)
        except (FileNotFoundError, sqlite3.Error):
            shutil.rmtree(pending, ignore_errors=True)
            time.sleep(1)
            continue
        if _stamps(run, loops) != before:
            shutil.rmtree(pending, ignore_errors=True)
            time.sleep(1)
            continue
        size = sum(p.stat().st_size for p in pending.rglob("*") if p.is_file())
        seconds = _seconds(run, before)
        if seconds is not None and (pending / "unit.json").is_file():
            marker = json.loads((pending / "unit.json").read_text())
            marker["seconds"] = seconds
            (pending / "unit.json").write_text(json.dumps(marker))
        newest = _newest(before)
        (pending / MANIFEST).write_text(json.dumps({
            "format": FORMAT, "unit": unit, "saved": _now(), "saved_at": time.time(),
            "source_newest_ns": newest, "files": len(files), "bytes": size,
            "left_out": left_out}, indent=1) + "\n")
        _replace(pending, target)
        note = f"{len(files)} files, {size / 1e6:.1f} MB"
        if left_out:
            note += f"; left out (over {limit:,} bytes, recomputed): {', '.join(left_out)}"
        return Carried(unit, True, note)
    return Carried(unit, False, f"not carried: the folder changed during {ATTEMPTS} tries")


def _replace(pending: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        target.replace(old)
    pending.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def _manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def snapshot_unfinished(work: Path, *, every: float = 0.0, limit: int = DEFAULT_LIMIT,
                        loops: bool = False) -> list[Carried]:
    """Snapshot every run folder of ``work`` whose unit has no result yet, unless its copy
    is under ``every`` seconds old or nothing in it changed since (pruning loops' checkpoints
    counted only when ``loops``); and discard the copies of units that have finished."""
    done = []
    for folder in sorted((work / "carry").glob("*")):
        if folder.is_dir() and not folder.name.startswith(".") \
                and result_file(work, folder.name).is_file():
            discard(work, folder.name)
    for run in sorted((work / "runs").glob("*")):
        if not run.is_dir() or result_file(work, run.name).is_file():
            continue
        target = carry_dir(work, run.name)
        manifest = _manifest(target)
        if manifest is not None:
            if _newest(_stamps(run, loops)) <= manifest["source_newest_ns"]:
                continue  # nothing changed since the copy (or the copy is from elsewhere)
            if time.time() - manifest["saved_at"] < every:
                continue
        done.append(snapshot(run, target, limit=limit, loops=loops))
    return done


def restore(work: Path, unit_id: str, run: Path) -> str | None:
    """Put ``carry/<unit>`` in ``run`` when ``run`` is missing or older than the folder the
    copy was made from; a line saying so, or None when the copy was not used."""
    source = carry_dir(work, unit_id)
    manifest = _manifest(source)
    if manifest is None:
        return None
    if run.exists() and _newest(_stamps(run, True)) >= manifest["source_newest_ns"]:
        return None
    pending = run.with_name(f".{run.name}.{os.getpid()}.tmp")
    shutil.rmtree(pending, ignore_errors=True)
    shutil.copytree(source, pending, ignore=lambda _, names: [  # side files: a reader's
        name for name in names if name == MANIFEST or _is_database_side_file(name)])
    if run.exists():
        shutil.rmtree(run)
    pending.replace(run)
    return (f"  continuing from {source} (saved {manifest['saved']}; "
            f"{manifest['files']} files)")


def discard(work: Path, unit_id: str) -> None:
    """Remove the copy of a finished unit (and the folder ``carry/`` once empty)."""
    shutil.rmtree(carry_dir(work, unit_id), ignore_errors=True)
    with contextlib.suppress(OSError):  # other units' copies remain
        (work / "carry").rmdir()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m n2n_env.paper.carry",
        description="Copy the run folders of a work folder's unfinished units to "
                    "WORK/carry/, to be committed.")
    parser.add_argument("work", type=Path, help="an n2n paper work folder")
    parser.add_argument("--every", type=float, default=0.0, metavar="SECONDS",
                        help="skip a unit whose copy is younger than this (default 0)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="BYTES",
                        help=f"largest file carried (default {DEFAULT_LIMIT:,})")
    parser.add_argument("--loops", action="store_true",
                        help="also carry pruning loops' per-step checkpoints (seed-K.loop.pt, "
                             "as large as the pruned network): once, at the end of a sitting")
    args = parser.parse_args(argv)
    if not args.work.is_dir():
        parser.error(f"{args.work} is not a folder")
    if args.every < 0 or args.limit < 1:
        parser.error("--every must be >= 0 and --limit >= 1")
    for carried in snapshot_unfinished(args.work, every=args.every, limit=args.limit,
                                       loops=args.loops):
        print(f"carry {carried.unit}: {carried.note}", file=sys.stdout if carried.copied
              else sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
