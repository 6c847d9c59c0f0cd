"""One ``kdrecon run`` at a time per run directory.

Two runs of the same experiment in one directory would train the same stages at once and write
the same files: both fail, or leave a stage marked complete whose evaluation the other removed.
A run takes ``RUN/.kdrecon-run.lock`` (created exclusively, holding its process id) once its
experiment is validated and before it writes anything, and removes it when it ends; another run
is refused while that process is alive, and a lock left by a killed process is taken over. The
stage processes of ``--parallel`` run under their parent's lock (:data:`RUN_LOCK_HOLDER`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from kdrecon.report.run_layout import RunLayout
from kdrecon.training.config import ConfigError

#: Environment variable through which a run passes its process id to its ``--parallel`` stage processes.
RUN_LOCK_HOLDER = "KDRECON_RUN_LOCK_HOLDER"


def _recorded_pid(layout: RunLayout) -> int | None:
    try:
        return int(layout.lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def _acquire(layout: RunLayout) -> None:
    for _ in range(2):  # the second try after removing a dead process's lock
        try:
            descriptor = os.open(layout.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _recorded_pid(layout)
            if holder is not None and holder != os.getpid() and _alive(holder):
                raise ConfigError(f"{layout.root}: another kdrecon run (process {holder}) is writing it; "
                                  "wait for it to end, or stop it first") from None
            layout.lock.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise ConfigError(f"{layout.root}: could not take {layout.lock.name}; is another run starting?")


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block (or share the parent run's, in a stage
    process it started); a run directory this creates and leaves empty is removed again."""
    created = not layout.root.exists()
    layout.root.mkdir(parents=True, exist_ok=True)
    inherited = os.environ.get(RUN_LOCK_HOLDER)
    if inherited is not None and str(_recorded_pid(layout)) == inherited:
        yield
        return
    _acquire(layout)
    try:
        yield
    finally:
        layout.lock.unlink(missing_ok=True)
        if created and not any(layout.root.iterdir()):
            layout.root.rmdir()
