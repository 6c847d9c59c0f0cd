"""One ``kdrecon run`` at a time per run directory.

Two runs of the same experiment in one directory would train the same stages at once and write
the same files: both fail, or leave a stage marked complete whose evaluation the other removed.
The run holds ``RUN/.kdrecon-run.lock`` (its process id) from when the directory is written until
it ends; a second run is refused while that process is alive, and a lock left by a killed process
is taken over. Stage processes started by ``--parallel`` (``--only``) work under their parent's lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from kdrecon.report.run_layout import RunLayout
from kdrecon.training.config import ConfigError


def _holder(layout: RunLayout) -> int | None:
    """The live process holding the lock, or None (no lock, an unreadable one, or one left by a dead process)."""
    try:
        pid = int(layout.lock.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # exists, owned by another user
    return pid


def refuse_if_locked(layout: RunLayout) -> None:
    """Refuse a run directory another live ``kdrecon run`` holds (checked before anything is written)."""
    holder = _holder(layout)
    if holder is not None:
        raise ConfigError(f"{layout.root}: another kdrecon run (process {holder}) is writing it; "
                          "wait for it to end, or stop it first")


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block; refuse while another live run holds it."""
    refuse_if_locked(layout)
    layout.lock.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        layout.lock.unlink(missing_ok=True)
