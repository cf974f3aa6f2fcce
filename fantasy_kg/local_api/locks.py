"""Advisory file locks (``fcntl.flock``) shared by every process that uses one state directory.

``flock`` locks belong to an open file description, so two threads of one process that each open
the lock file conflict exactly like two processes do, and the kernel drops a lock when its holder
dies (a SIGKILLed CLI run never leaves a batch locked).
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Args:
        path: The lock file.
        blocking: Wait for the lock (default); otherwise give up at once when it is held.

    Yields:
        ``True`` when the lock is held; ``False`` only in non-blocking mode when it was busy.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
