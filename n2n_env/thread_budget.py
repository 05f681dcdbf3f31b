"""A machine-wide share of the CPU cores among the n2n processes that train at once.

Torch sizes its thread pool for a machine it has to itself. Two n2n processes that each
take every core oversubscribe it: on the 2-core machine of docs/benchmarks.md, the default
``n2n compress`` took 21 minutes instead of 3.4 beside one other training process, and its
CPU time tripled (threads spinning and waiting for each other). Here every n2n process
that trains on the CPU registers itself in one directory, and each takes
``(cores - threads held by fixed processes) // (processes sharing the rest)`` threads, at
least one:

* :func:`claim` (what :func:`n2n_env.device.use_all_cores` does) registers this process
  and sets its thread count;
* :func:`rebalance`, called before each training (:func:`n2n_env.training.train_steps`),
  re-counts the live processes, at most once per :data:`CHECK_INTERVAL`, so a process that
  starts later and one that finishes both rebalance the others;
* a live process that sits idle (less than :data:`BUSY_SHARE` of a core since the previous
  count: a pool of workers waiting for students, a notebook between two trainings) holds
  no cores until it computes again; a process seen for the first time counts;
* the registration is a small file, ``<pid>.json``, holding the pid, the process's start
  time and the threads it holds if they are fixed. It is removed at exit; after a
  ``kill -9``, the next process to count finds the pid gone (or reused by a process that
  started at another time) and deletes the file.

An explicit setting wins: ``N2N_THREADS=k`` (or ``claim(k)``) fixes this process at ``k``
threads, and an ``OMP_NUM_THREADS`` in the environment keeps torch's count as it is. Such
a process still registers, with its fixed count, so the others leave those cores to it. So
does a process whose thread count someone changed (``torch.set_num_threads``) after
:func:`claim`: that caller is in control from then on.

The directory is ``$N2N_THREADS_DIR`` if set, else ``n2n-threads`` in the system's
temporary directory (shared by every user, sticky like ``/tmp``). Thread counts change the
order of floating-point sums, so on the CPU, results are bit-reproducible for one thread
count: set ``N2N_THREADS`` where that matters.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "BUSY_SHARE",
    "CHECK_INTERVAL",
    "Registration",
    "available_cores",
    "claim",
    "explicit_threads",
    "live_registrations",
    "rebalance",
    "registry_dir",
    "release",
    "share",
]

CHECK_INTERVAL = 1.0
"""Seconds between two re-counts of the live processes by :func:`rebalance`."""
BUSY_SHARE = 0.2
"""The share of one core a registered process must have used since the previous count to
hold cores (where ``/proc`` tells)."""
_MIN_SAMPLE = 0.5
"""Seconds between two CPU-time samples of a process; a closer count keeps the verdict."""

_MAX_FILE_BYTES = 4096
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Registration:
    """One registered n2n process."""

    pid: int
    start: str | None
    """The process's start time as the kernel counts it (``/proc/<pid>/stat``), which tells
    a live process from a later one that reuses the pid; None where there is no ``/proc``."""
    threads: int | None
    """The threads it holds when they are fixed (an explicit setting); None when it takes
    its share."""


@dataclass
class _State:
    """This process's registration, as far as this module manages it."""

    pid: int | None = None
    """The pid that registered (a forked child inherits the state, not the registration)."""
    directory: Path | None = None
    fixed: int | None = None
    """The fixed thread count written in the registration, or None when sharing."""
    applied: int | None = None
    """The thread count this module last set while sharing."""
    checked: float = float("-inf")
    """When the live processes were last counted (``time.monotonic``)."""
    exit_hook: bool = False
    samples: dict[tuple[int, str], tuple[int, float, bool]] = field(default_factory=dict)
    """Per registered process (pid, start): its CPU ticks and when they were read, and
    whether it was busy then."""


_state = _State()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def registry_dir() -> Path:
    """Where the registrations live: ``$N2N_THREADS_DIR``, else ``<tmp>/n2n-threads``."""
    configured = os.environ.get("N2N_THREADS_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / "n2n-threads"


def explicit_threads() -> int | None:
    """The thread count ``$N2N_THREADS`` fixes, or None when it is unset or empty.

    Raises ValueError for anything but a positive integer, rather than guessing."""
    text = os.environ.get("N2N_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"N2N_THREADS must be a positive integer, got {text!r}")
    return int(text)


def share(cores: int, others: list[Registration]) -> int:
    """The threads of one sharing process among ``others`` (live, not counting itself): the
    cores the fixed ones leave, divided among the sharing ones and this one, at least 1."""
    fixed = sum(other.threads for other in others if other.threads is not None)
    sharing = 1 + sum(other.threads is None for other in others)
    return max(1, (cores - fixed) // sharing)


def claim(threads: int | None = None) -> int:
    """Register this process as one that trains on the CPU and set torch's thread count;
    returns it.

    ``threads`` (or else ``$N2N_THREADS``) fixes the count; an ``OMP_NUM_THREADS`` in the
    environment keeps torch's current count; otherwise this process takes its share of
    :func:`available_cores` among the live registered n2n processes and keeps it balanced
    through :func:`rebalance`. Calling it again re-takes the share (after a caller changed
    the thread count in between, say).
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    fixed = threads if threads is not None else explicit_threads()
    if fixed is not None:
        torch.set_num_threads(fixed)
    elif os.environ.get("OMP_NUM_THREADS"):
        fixed = torch.get_num_threads()
    _state.pid, _state.directory = os.getpid(), registry_dir()
    _state.fixed, _state.applied, _state.checked = fixed, None, float("-inf")
    _write_registration()
    if not _state.exit_hook:
        atexit.register(release)
        _state.exit_hook = True
    if fixed is None:
        _apply_share()
    return torch.get_num_threads()


def rebalance() -> int:
    """Re-take this process's share if other n2n processes started or finished; returns
    torch's thread count.

    Does nothing in a process that did not :func:`claim` its share, that holds a fixed
    count, or whose count was changed by someone else since (from then on that caller is
    in control, and the registration says so). The count is checked at most once per
    :data:`CHECK_INTERVAL` seconds, so calling this before every training is cheap.
    """
    if _state.pid != os.getpid() or _state.fixed is not None:
        return torch.get_num_threads()
    current = torch.get_num_threads()
    if current != _state.applied:
        _state.fixed = current
        _write_registration()
        return current
    if time.monotonic() - _state.checked >= CHECK_INTERVAL:
        _apply_share()
    return torch.get_num_threads()


def release() -> None:
    """Remove this process's registration (run at exit); its thread count stays as it is."""
    if _state.pid == os.getpid() and _state.directory is not None:
        with contextlib.suppress(OSError):
            (_state.directory / f"{_state.pid}.json").unlink()
    _state.pid = None


def live_registrations(directory: Path | None = None) -> list[Registration]:
    """The registrations in ``directory`` (default :func:`registry_dir`) whose process is
    still alive, deleting those left behind by dead processes (where allowed)."""
    directory = registry_dir() if directory is None else directory
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []
    live = []
    for path in paths:
        registration = _read(path)
        if registration is None:
            continue
        if _alive(registration):
            live.append(registration)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return live


def _apply_share() -> None:
    """Set torch's thread count to this process's share and remember it."""
    assert _state.directory is not None
    live = [r for r in live_registrations(_state.directory) if r.pid != os.getpid()]
    others = [registration for registration in live if _busy(registration)]
    kept = {(registration.pid, registration.start) for registration in live}
    _state.samples = {key: value for key, value in _state.samples.items() if key in kept}
    threads = share(available_cores(), others)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    _state.applied, _state.checked = torch.get_num_threads(), time.monotonic()


def _write_registration() -> None:
    """Write this process's registration atomically; a directory that cannot be written
    leaves the process unregistered but still sharing what it can count."""
    assert _state.directory is not None
    payload = json.dumps({"pid": _state.pid, "start": _start_time(os.getpid()),
                          "threads": _state.fixed})
    try:
        _make_directory(_state.directory)
        handle, temporary = tempfile.mkstemp(prefix=f".{_state.pid}.", dir=_state.directory)
    except OSError:
        return
    try:
        with os.fdopen(handle, "w") as file:
            file.write(payload)
        os.chmod(temporary, 0o644)  # readable by the other users' n2n processes
        os.replace(temporary, _state.directory / f"{_state.pid}.json")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _make_directory(directory: Path) -> None:
    """Create ``directory`` writable by every user but, like ``/tmp``, with each user's files
    deletable only by their owner (the sticky bit)."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if directory.stat().st_uid == os.getuid():
            directory.chmod(0o1777)


def _read(path: Path) -> Registration | None:
    """The registration in ``path``, or None when it is not one (being written, foreign)."""
    try:
        with path.open("rb") as file:
            values = json.loads(file.read(_MAX_FILE_BYTES))
        pid, start, threads = values["pid"], values.get("start"), values.get("threads")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or pid < 1 or path.stem != str(pid):
        return None
    if start is not None and not isinstance(start, str):
        return None
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        return None
    return Registration(pid=pid, start=start, threads=threads)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """The start time of process ``pid`` in clock ticks since boot and the CPU ticks it used
    (user plus system), from ``/proc/<pid>/stat`` (fields 22, 14 and 15); None when there is
    no such process, it is a zombie, or there is no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (command) "
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return fields[19], int(fields[11]) + int(fields[12])
    except ValueError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (see :func:`_proc_stat`), or None."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[0]


def _busy(registration: Registration) -> bool:
    """Whether a live registered process used at least :data:`BUSY_SHARE` of a core since
    the previous sample; True at the first sample, and where ``/proc`` does not tell."""
    stat = _proc_stat(registration.pid) if registration.start is not None else None
    if stat is None or stat[0] != registration.start:
        return True
    key, now = (registration.pid, stat[0]), time.monotonic()
    previous = _state.samples.get(key)
    if previous is not None and now - previous[1] < _MIN_SAMPLE:
        return previous[2]
    busy = previous is None or (
        (stat[1] - previous[0]) / _CLOCK_TICKS >= BUSY_SHARE * (now - previous[1]))
    _state.samples[key] = (stat[1], now, busy)
    return busy


def _alive(registration: Registration) -> bool:
    """Whether the registered process still runs (and is the one that registered): its
    start time matches where ``/proc`` has one, else a signal 0 reaches it."""
    if registration.start is not None:
        return _start_time(registration.pid) == registration.start
    try:
        os.kill(registration.pid, 0)
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True
