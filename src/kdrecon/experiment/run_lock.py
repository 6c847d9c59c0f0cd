"""One ``kdrecon run`` at a time per run directory.

Two runs of the same experiment in one directory would train the same stages at once and write
the same files: both fail, or leave a stage marked complete whose evaluation the other removed.
A run holds an exclusive ``flock`` on ``RUN/.kdrecon-run.lock`` (which records its process id and
host) from when its experiment is validated, before it writes anything, until it ends. The
kernel releases the lock when its process dies, however it dies, so a killed run's lock file is
taken over without guessing from process ids (which would mistake a run on another host sharing
the filesystem for a dead one). The stage processes of ``--parallel`` run under their parent's
lock (:data:`RUN_LOCK_HOLDER`), and each holds it too (:func:`lock_descriptors`): stage processes
that outlive a killed parent keep the directory locked until they end.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdrecon.report.run_layout import RunLayout
from kdrecon.training.config import ConfigError

#: Environment variable through which a run passes :func:`holder` to its ``--parallel`` stage processes.
RUN_LOCK_HOLDER = "KDRECON_RUN_LOCK_HOLDER"

#: The locked descriptor of each run directory this process holds the lock of, by its root.
_held: dict[str, int] = {}


def lock_descriptors(layout: RunLayout) -> tuple[int, ...]:
    """The descriptor holding ``layout``'s lock in this process (none where it holds none): passed to a
    stage process, it keeps the lock held while that process lives, even if this one is killed."""
    descriptor = _held.get(str(layout.root))
    return () if descriptor is None else (descriptor,)


def holder() -> str:
    """``"PID HOST"`` of this process, as its lock file records it."""
    return f"{os.getpid()} {socket.gethostname()}"


def _recorded_holder(layout: RunLayout) -> str:
    """``"PID HOST"`` of the run that wrote the lock file, or empty."""
    try:
        return layout.lock.read_text().strip()
    except OSError:
        return ""


def _refusal(layout: RunLayout) -> str:
    """Why the lock cannot be taken: the run its file names, or, when that run has died on this host
    and left ``--parallel`` stage processes holding the lock, those processes."""
    pid, _, host = _recorded_holder(layout).partition(" ")
    holders = _local_holders(layout.lock) if host == socket.gethostname() and not _alive(pid) else []
    if holders:
        listed = ", ".join(str(holder) for holder in holders)
        return (f"{layout.root}: the kdrecon run that locked it (process {pid}) has ended, but processes it started "
                f"still write it (process {listed}); wait for them to end, or stop them first")
    return (f"{layout.root}: another kdrecon run (process {pid or '?'} on {host or '?'}) is writing it; "
            "wait for it to end, or stop it first")


def _alive(pid: str) -> bool:
    """Whether process ``pid`` of this host exists (True when that cannot be told)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_holders(path: Path) -> list[int]:
    """The processes of this host with ``path`` open (Linux's /proc; none where it cannot be read)."""
    try:
        target = os.stat(path)
        processes = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []
    holders = []
    for process in processes:
        try:
            descriptors = os.listdir(f"/proc/{process}/fd")
            opened = (os.stat(f"/proc/{process}/fd/{fd}") for fd in descriptors)
            if any(s.st_ino == target.st_ino and s.st_dev == target.st_dev for s in opened):
                holders.append(int(process))
        except OSError:  # ended meanwhile, or another user's
            continue
    return sorted(holders)


def _is_current_file(descriptor: int, layout: RunLayout) -> bool:
    """Whether the open lock file is still the one at the lock's path: the run that held it before
    removes it when it ends, and a lock taken on the removed file would guard nothing."""
    try:
        return os.fstat(descriptor).st_ino == os.stat(layout.lock).st_ino
    except FileNotFoundError:
        return False


def _acquire(layout: RunLayout) -> int:
    """The descriptor of the lock file, exclusively locked and holding this process's id and host."""
    while True:
        descriptor = os.open(layout.lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConfigError(_refusal(layout)) from None
        if _is_current_file(descriptor, layout):
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{holder()}\n".encode())
    return descriptor


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block (or share the parent run's, in a stage
    process it started); a run directory this creates and leaves empty is removed again, with the
    folders above it that it created."""
    created = [folder for folder in (layout.root, *layout.root.parents) if not folder.exists()]
    layout.root.mkdir(parents=True, exist_ok=True)
    inherited = os.environ.get(RUN_LOCK_HOLDER)
    if inherited is not None and _recorded_holder(layout) == inherited:
        yield
        return
    descriptor = _acquire(layout)
    _held[str(layout.root)] = descriptor
    try:
        yield
    finally:
        del _held[str(layout.root)]
        layout.lock.unlink(missing_ok=True)  # before unlocking: see _is_current_file
        os.close(descriptor)
        _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for folder in folders:
        if any(folder.iterdir()):
            return
        folder.rmdir()
