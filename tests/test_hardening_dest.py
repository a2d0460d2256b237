"""No command writes to or through a FIFO or a device node, and every writing command refuses
one before its work: trace --timeline, check --update-baseline, report --out, validate --out,
profile --out, calibrate --out, and the files a report or a validation writes inside its folder.

A FIFO is held open for reading (non-blocking) during each run, so a write would not block: it
would land in the pipe, and the test reads the pipe empty afterwards. A write to ``/dev/full``
fails with ENOSPC, so a refusal ("not a regular file") rather than a disk-full error proves that
nothing was written. Under root the device nodes are private copies (``mknod`` of /dev/null's and
/dev/full's numbers in the test's folder), so a regression could never replace the real ones;
otherwise the real /dev/null and /dev/full are used (where present), which a non-root process
cannot replace.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main

ROOT = Path(__file__).parents[1]
TINY = str(ROOT / "tests" / "data" / "tiny-llama" / "config.json")

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _nodes(folder: Path) -> dict[str, Path]:
    """The special files to use as destinations: name -> path."""
    out = {"fifo": folder / "fifo"}
    os.mkfifo(out["fifo"])
    (folder / "link-to-fifo").symlink_to(out["fifo"])
    out["link-to-fifo"] = folder / "link-to-fifo"
    for name in ("null", "full"):
        real = Path("/dev") / name
        if not real.exists():
            continue
        if os.geteuid() == 0:
            st = os.stat(real)
            os.mknod(folder / name, stat.S_IFCHR | 0o666, st.st_rdev)
            out[f"dev-{name}"] = folder / name
        else:
            out[f"dev-{name}"] = real
        (folder / f"link-to-{name}").symlink_to(out[f"dev-{name}"])
        out[f"link-to-dev-{name}"] = folder / f"link-to-{name}"
    return out


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino


WRITERS = {
    "trace --timeline": lambda dest: ["trace", "-m", TINY, "--method", "lora", "-s", "16", "--timeline", dest],
    "check --update-baseline": lambda dest: ["check", "-m", TINY, "--method", "lora", "--baseline", dest,
                                             "--update-baseline"],
    "report --out": lambda dest: ["report", "-m", TINY, "--out", dest, "--format", "svg"],
    "validate --out": lambda dest: ["validate", "--quick", "--models", "GPT-2", "--out", dest],
    "profile --out": lambda dest: ["profile", "-m", TINY, "--device", "cpu", "--steps", "1", "--warmup", "0",
                                   "--methods", "lora", "-s", "16", "-b", "1", "--out", dest],
    "calibrate --out": lambda dest: ["calibrate", str(ROOT / "profiles"), "--out", dest],
}  # fmt: skip
INSIDE = {  # folder commands: the special file sits where one of their files goes
    "report --out": "report.md",
    "report figure": "breakdown.svg",
    "report csv": "breakdown.csv",
    "validate --out": "accuracy.csv",
    "validate report": "accuracy.md",
}
REFUSED = ("not a regular file", "not a folder", "it is not a", "already exists")


def _check_run(args: list[str], watched: dict[str, Path]) -> None:
    before = {name: _identity(path) for name, path in watched.items()}
    readers = {name: os.open(p, os.O_RDONLY | os.O_NONBLOCK) for name, p in watched.items() if "fifo" in name}
    try:
        result = CliRunner().invoke(main, args)
        pending = {}
        for name, fd in readers.items():
            try:
                pending[name] = os.read(fd, 1 << 16)
            except BlockingIOError:
                pending[name] = b""
    finally:
        for fd in readers.values():
            os.close(fd)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert any(word in errors[0] for word in REFUSED), errors[0]
    progress = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("Usage:", "Try ", "Error:"))
    ]
    assert progress == []  # refused before the work: no progress line
    assert pending == dict.fromkeys(readers, b"")  # nothing written into a FIFO
    assert {name: _identity(path) for name, path in watched.items()} == before  # nothing replaced


@pytest.mark.parametrize("command", list(WRITERS))
def test_no_writer_uses_a_fifo_or_a_device_as_its_destination(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    nodes = _nodes(tmp_path)
    for name, node in nodes.items():
        dest = str(node)
        if command == "profile --out":  # a .json --out is a file (claimed with O_EXCL), any other a folder
            (tmp_path / f"{name}.json").symlink_to(node)
            _check_run(WRITERS[command](str(tmp_path / f"{name}.json")), nodes)
        _check_run(WRITERS[command](dest), nodes)


@pytest.mark.parametrize("where", list(INSIDE))
def test_no_file_inside_an_output_folder_is_a_fifo_or_a_device(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    nodes = _nodes(tmp_path)
    command = "report --out" if where.startswith("report") else "validate --out"
    for name, node in nodes.items():
        folder = tmp_path / f"out-{name}"
        folder.mkdir()
        (folder / INSIDE[where]).symlink_to(node)
        _check_run(WRITERS[command](str(folder)), nodes)
        assert os.path.islink(folder / INSIDE[where])
        if not name.startswith("link"):  # the node itself in the folder, not a link to it
            (folder / INSIDE[where]).unlink()
            if "fifo" in name:
                os.mkfifo(folder / INSIDE[where])
                _check_run(WRITERS[command](str(folder)), {**nodes, "fifo-inside": folder / INSIDE[where]})
