"""Writing files so that a crash or a full disk never leaves a half-written one behind.

What is at the destination decides how it is written (nothing a user saved is replaced by
something else):

- nothing, or a regular file: a temp file in the same folder, fsync, then ``os.replace``; an
  existing file keeps its permission bits (a 0600 baseline stays 0600);
- a symlink: written through to the file it points at (the link stays a link);
- a device, FIFO, socket or folder: refused with a one-line error, never replaced by a file.

A missing parent folder is an error, not created silently.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from lora_budget.errors import LoraBudgetError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(path: str | Path) -> Path:
    """Return the path a write to ``path`` will really replace, or raise LoraBudgetError.

    Called before expensive work, so a bad ``--out`` fails in a second, not after a sweep.
    Symlinks are followed; the result must be a regular file or free, in an existing writable
    folder.
    """
    given = Path(path)
    target = Path(os.path.realpath(given))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise LoraBudgetError(f"cannot write {given}: {exc.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise LoraBudgetError(f"cannot write {given}: it is {kind}")
    parent = target.parent
    if not parent.is_dir():
        raise LoraBudgetError(f"cannot write {given}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LoraBudgetError(f"cannot write {given}: folder {parent} is not writable")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(target.name)) > name_max:
        raise LoraBudgetError(f"cannot write {given}: file name is over {name_max} bytes")
    return target


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path``: a temp file in the same folder, fsync, then ``os.replace``.

    Readers see the old file or the new one, never a mix. A new file gets the usual permissions
    (0666 less the umask; ``mkstemp`` alone would make it 0600); an existing one keeps its own.
    The destination is checked first (``check_destination``): symlinks are written through,
    non-regular targets are refused.
    """
    target = check_destination(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def claim_new(path: str | Path) -> Path:
    """Create ``path`` empty with ``O_EXCL`` so a second writer fails at once; return its real path.

    Raises LoraBudgetError if the file already exists or cannot be made.
    """
    target = check_destination(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise LoraBudgetError(f"{path} already exists; choose a new --out") from None
    except OSError as exc:
        raise LoraBudgetError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    return target
