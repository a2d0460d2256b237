"""Writing files so that a crash or a full disk never leaves a half-written one behind.

What is at the destination decides how it is written (nothing a user saved is replaced by
something else):

- nothing, or a regular file: a temp file in the same folder, fsync, then ``os.replace``; an
  existing file keeps its permission bits (a 0600 baseline stays 0600);
- a symlink: written through to the file it points at (the link stays a link);
- a device, FIFO, socket or folder: refused with a one-line error, never replaced by a file.

A missing parent folder is an error, not created silently; ``check_folder`` vets an output
folder (and the files a command will write in it) before the work that fills it.
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
    _probe(parent, f"cannot write {given}")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(target.name)) > name_max:
        raise LoraBudgetError(f"cannot write {given}: file name is over {name_max} bytes")
    return target


def _probe(folder: Path, what: str) -> None:
    """Make and remove an empty file in ``folder``: the only test that holds for root, for /proc
    and for a read-only mount alike (``os.access`` says yes to root everywhere)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lora-budget-probe.", dir=folder)
    except OSError as exc:
        raise LoraBudgetError(f"{what}: folder {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def check_folder(path: str | Path, files: tuple[str, ...] = ()) -> Path:
    """Return the real path of an output folder, or raise LoraBudgetError before any expensive work.

    An existing folder must be writable, and each of ``files`` already in it must pass
    ``check_destination`` (a FIFO named ``accuracy.csv`` is refused, not written through). A
    missing folder will be made: its nearest existing ancestor must be a writable folder, and
    outside the current folder only the last level may be missing (a typo such as
    ``/nonexistent/x`` is refused rather than created as a new tree at the file system's root).
    """
    given = Path(path)
    target = Path(os.path.realpath(given))
    if target.exists():
        if not target.is_dir():
            raise LoraBudgetError(f"cannot write into {given}: it is not a folder")
        if not os.access(target, os.W_OK | os.X_OK):
            raise LoraBudgetError(f"cannot write into {given}: folder is not writable")
        _probe(target, f"cannot write into {given}")
        for name in files:
            if os.path.lexists(target / name):
                check_destination(target / name)
        return target
    missing = [target]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    for part in missing:
        if len(os.fsencode(part.name)) > 255:
            raise LoraBudgetError(f"cannot write into {given}: a folder name is over 255 bytes")
    ancestor = missing[-1].parent
    if not ancestor.is_dir():
        raise LoraBudgetError(f"cannot write into {given}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LoraBudgetError(f"cannot write into {given}: folder {ancestor} is not writable")
    if len(missing) > 1 and not target.is_relative_to(Path(os.path.realpath(os.getcwd()))):
        raise LoraBudgetError(
            f"cannot write into {given}: folder {missing[-1]} does not exist; create it first "
            "(outside the current folder only the last folder is made)"
        )
    try:  # the folder is made later, by the writer; make and remove its first missing level now
        os.mkdir(missing[-1])
        os.rmdir(missing[-1])
    except OSError as exc:
        raise LoraBudgetError(f"cannot write into {given}: {exc.strerror or exc}") from None
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
