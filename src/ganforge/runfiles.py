"""Files of a run directory: atomic writes, an append-only log, and paths checked before work.

Every file ganforge keeps in a run directory is written through ``atomic_write`` (a temporary
file in the same folder, flushed, fsynced and renamed over the old one, then the folder
fsynced), so a full disk or a kill mid-write leaves the previous version intact. ``log.jsonl``
is append-only through ``AppendLog``: a line that cannot be written whole is cut back off, so
earlier lines never change and the next append starts on a clean line.

``check_writable`` probes a folder by creating (and removing) a temporary file in it: the one
test that also holds for root, whom permission bits do not stop but a read-only mount, an
immutable folder or ``/proc`` do. Kept free of torch and matplotlib (``ganforge runs`` and the
status writer import it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import GanforgeError, option


class WriteError(OSError, GanforgeError):
    """A run file could not be written; its previous version, if any, is kept.

    Also an ``OSError``, so that code which tolerates failed writes (a status update while a
    run is already failing) keeps doing so, while the CLI prints it as one line.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def fsync_dir(path: Path) -> None:
    """Make a rename in folder ``path`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file object whose content replaces ``path`` only once it is complete and synced.

    On any failure (a full disk, an exception in the ``with`` body, a signal) the temporary
    file is removed and ``path`` keeps its previous content; an ``OSError`` becomes a one-line
    ``WriteError`` naming the file.
    """
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            kept = "its previous version is kept" if path.exists() else "nothing was written"
            raise WriteError(
                e.errno or errno.EIO,
                f"could not write {path} ({_reason(e)}); {kept}; "
                "free disk space or check the folder's permissions",
            ) from None
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a text file atomically (see ``atomic_write``)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write a binary file atomically (see ``atomic_write``)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def _cut_partial_line(fd: int) -> None:
    """Cut a last line without its newline (a process killed inside a write, or a full disk
    that hit another writer) off the file, so the next line starts clean and no earlier one
    is joined to it. Whole lines are never touched."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            os.ftruncate(fd, start + i + 1)
            return
        end = start
    os.ftruncate(fd, 0)


class AppendLog:
    """``log.jsonl`` opened for appending whole lines only.

    ``write`` appends one complete text (lines ending in a newline) with a single
    ``os.write`` on an ``O_APPEND`` descriptor; if the disk is full the part that reached the
    file is cut back off, so the earlier lines stay as they were and the next append starts on
    a clean line. Opening it cuts off a partial last line left by a process killed mid-write.
    Has ``write``, ``flush`` and ``close`` like the text file it replaces.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _cut_partial_line(self.fd)
        except OSError:
            os.close(self.fd)
            raise

    def write(self, text: str) -> int:
        if self.fd is None:
            raise ValueError("write to a closed log")
        data = text.encode()
        size = os.fstat(self.fd).st_size
        try:
            done = 0
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)
            raise WriteError(
                e.errno or errno.EIO,
                f"could not append to {self.path} ({_reason(e)}); the lines before are kept; "
                "free disk space, then continue with 'ganforge train --resume "
                f"{self.path.parent}'",
            ) from None
        return len(text)

    def write_record(self, record: dict[str, Any]) -> None:
        """Append one JSON record as a line."""
        self.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        """Nothing is buffered: each ``write`` went to the file whole."""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- paths checked before work


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (lexically, as mkdir -p would walk)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (None: it can). Creates and removes one."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ganforge-probe-", dir=folder)
    except OSError as e:
        return _reason(e)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def check_writable(folder: Path | str, what: str, fix: str) -> None:
    """Raise one line unless files can be created in ``folder`` (or, when it does not exist
    yet, in the nearest existing folder above it, where it would be created).

    ``what`` names the argument (e.g. "--out runs/a"), ``fix`` the way out.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GanforgeError(f"{what}: {folder} is a file, not a folder; {fix}")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise GanforgeError(f"{what}: {base} is a file, so {folder} cannot be created; {fix}")
    reason = _probe(base)
    if reason is not None:
        where = "" if base == Path(os.path.abspath(folder)) else f" ({base}, where it would go)"
        raise GanforgeError(f"{what}: cannot write in {folder}{where}: {reason}; {fix}")


# names ganforge keeps in a run directory (the training's files and folders, the report,
# the evaluations): no output a command is told to write ever lands on one of them
RUN_KEEPS = (
    "checkpoints",
    "samples",
    "tensorboard",
    ".lock",
    "config.yaml",
    "log.jsonl",
    "status.json",
    "env.json",
    "summary.txt",
    "final.png",
    "report.html",
    "progress.gif",
    "metrics.json",
    "metrics.jsonl",
)
RUN_MARKS = ("config.yaml", "log.jsonl", "checkpoints", "status.json")


def _is_run(folder: Path, reads: set[Path]) -> bool:
    """A run the command reads, or any folder with two of a run's marks (a lone config.yaml
    is not enough: a project folder may have one)."""
    return folder in reads or sum((folder / m).exists() for m in RUN_MARKS) >= 2


def refuse_run_files(
    path: Path | str,
    what: str,
    reads: Iterable[Path | str] = (),
    own: str | None = None,
    folder: bool = False,
    itself: bool = False,
) -> None:
    """Raise one line when ``path`` is, or lies in, a name a run directory keeps (``RUN_KEEPS``)
    of any run: one the command reads (``reads``) or any other. Both the entry a write would
    replace (its folder resolved) and what a symlink there leads to are checked. ``own``: the
    one kept name the command writes by design (``report.html`` for ``report``); ``folder``:
    ``path`` is a folder to make or fill (a file there is the shape check's to report);
    ``itself``: that folder must not be a run directory either.

    A path under an existing file cannot be made at all: the writability check says so.
    """
    path = Path(path)
    runs = {Path(r).resolve() for r in reads}
    lexical = Path(os.path.abspath(path))
    entry = lexical.parent.resolve() / lexical.name
    for target in dict.fromkeys((entry, lexical.resolve())):
        via = "" if target == entry else f" ({path} is a link to {target})"
        if folder and target.exists() and not target.is_dir():
            continue
        if any(p.exists() and not p.is_dir() for p in target.parents):
            continue
        if itself and _is_run(target, runs):
            raise GanforgeError(
                f"{what}: that is a run directory{via}; ganforge never writes over a run's "
                "own files: choose a new folder"
            )
        for parent in target.parents:
            name = target.relative_to(parent).parts[0]
            if name in RUN_KEEPS and name != own and _is_run(parent, runs):
                where = f"is the {name} of" if target == parent / name else f"lies in {name}/ of"
                raise GanforgeError(
                    f"{what}: that {where} the run {parent}{via}; ganforge never writes over "
                    "a run's own files: choose a path outside the run (or a name of your own "
                    "in it)"
                )


def check_output(
    path: Path | str,
    what: str,
    reads: Iterable[Path | str] = (),
    own: str | None = None,
    folder: bool = False,
) -> None:
    """The one check of every output path a command writes (``-o``, ``--out``, a report):
    one line, before any work, unless ``path`` can take it.

    A file (``folder`` False) must not be a folder or a special file (a FIFO, /dev/null); a
    folder must not be a file. Neither may be, or lie in, a file or folder a run keeps (see
    ``refuse_run_files``; ``reads`` the runs the command reads, ``own`` the kept name it writes
    by design). Its folder, or the nearest one above that exists, must take new files.
    """
    path = Path(path)
    if folder:
        refuse_run_files(path, what, reads, own, folder=True, itself=True)
        check_writable(path, what, "choose another folder")
        return
    if path.is_dir():
        raise GanforgeError(f"{what}: {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise GanforgeError(f"{what}: {path} is not a regular file; give another file name")
    refuse_run_files(path, what, reads, own)
    check_writable(path.parent if str(path.parent) else Path("."), what, "choose another path")


# ---------------------------------------------------------------- run directories


def safe_run_name(recipe: str) -> str:
    """A run folder's name made from a recipe name: one path component, never a path.

    ``--set recipe=/abs/path`` or ``../x`` must not put a run outside the runs folder.
    """
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", recipe).strip(".-")
    return name or "run"


def set_aside(run_dir: Path) -> Path:
    """Move an existing run directory out of the way (``RUN.replaced-<time>`` next to it) so
    that a fresh run can start at its path; the old run stays whole and resumable there.

    Refuses while another process trains it (its lock is held).
    """
    import fcntl

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would move it
        raise GanforgeError(
            "--overwrite is for single-process runs; move the old run away first, or give "
            "--overwrite to 'ganforge train --nproc N', which moves it before starting"
        )
    lock = run_dir / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644) if run_dir.is_dir() else None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise GanforgeError(
                    f"{run_dir} is being trained by another process; wait for it to finish"
                ) from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
        i = 1
        while target.exists():
            i += 1
            target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{i}")
        try:
            os.rename(run_dir, target)
        except OSError as e:
            raise GanforgeError(
                f"--overwrite: cannot move {run_dir} aside ({_reason(e)}); choose another --out"
            ) from None
    finally:
        if fd is not None:
            os.close(fd)
    fsync_dir(target.parent)
    return target


def lock_held(run_dir: Path) -> bool | None:
    """Whether a process trains ``run_dir`` now: it holds the exclusive flock on
    ``RUN_DIR/.lock`` (None: no lock file, or it cannot be opened, so nobody can tell).

    Asks the lock itself with a non-blocking shared flock, released at once: a pid in
    status.json may have been reused by another process after the run was killed. Opens the
    file read-only and never creates it, so listing runs changes nothing.
    """
    import fcntl

    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases a lock taken just now
    return False


def remove_tree(path: Path) -> None:
    """Remove a folder tree; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


RUN_FOLDERS = ("checkpoints", "samples")
RUN_FILES = (
    ".lock", "config.yaml", "log.jsonl", "status.json", "env.json", "summary.txt", "data.json",
)  # fmt: skip


def check_run_layout(run_dir: Path) -> None:
    """Raise one line when a name ganforge writes in a run directory is taken by something
    else (a file named ``checkpoints``, a folder named ``log.jsonl``): found mid-run, it
    would end in a traceback, or worse, a resume from step 0 over the run's log."""
    for name in RUN_FOLDERS:
        p = run_dir / name
        if (p.exists() or p.is_symlink()) and not p.is_dir():
            raise GanforgeError(
                f"{p} is not a folder; ganforge keeps its {name} there: move it away"
            )
    for name in RUN_FILES:
        p = run_dir / name
        if p.exists() and not p.is_file():
            raise GanforgeError(f"{p} is not a regular file; ganforge writes it: move it away")


def holds_run(run_dir: Path) -> str | None:
    """The first file that shows ``run_dir`` holds a run, or part of one (None: it does not).

    A run whose config.yaml was lost still has its checkpoints and log: a fresh run there
    would append to the log and rotate the old checkpoints away.
    """
    for name in RUN_MARKS:
        p = run_dir / name
        if p.exists() or p.is_symlink():
            return name
    return None


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Before training: the run directory (or where it will be made) must take new files,
    the names ganforge writes there must be free or its own, and a fresh run never goes
    into a folder that holds (part of) another."""
    if not resume:  # never inside another run's checkpoints/, samples/, ...
        refuse_run_files(run_dir, f"--out {run_dir}", folder=True)
    if run_dir.is_dir():
        check_run_layout(run_dir)
        # under torchrun rank 0 may already have begun the run the others join
        first = os.environ.get("RANK", "0") == "0"
        mark = holds_run(run_dir) if first and not resume else None
        if mark is not None:
            raise GanforgeError(
                f"{option('--out', 'out=')} {run_dir} already holds a run (or part of one: "
                f"{mark}); continue it with "
                f"{option(f'--resume {run_dir}', f'ganforge.resume({str(run_dir)!r})')}, "
                f"choose another {option('--out', 'out=')}, or "
                f"{option('add --overwrite', 'pass overwrite=True')} to move that run aside"
            )
    if resume:
        check_writable(
            run_dir,
            f"--resume {run_dir}",
            "make it writable, or copy the run somewhere writable and resume the copy",
        )
    else:
        check_writable(run_dir, f"--out {run_dir}", "choose another --out")


# ---------------------------------------------------------------- the run a command works on


class RunPin:
    """A run directory held open by a command that reads it and later writes results into
    it (``evaluate``, ``report``, ``sample -o`` or ``export`` inside the run).

    ``train --out RUN --overwrite`` may move the run aside (``RUN.replaced-<time>``) and
    start a new one at its path meanwhile. The open folder keeps its identity (device and
    inode) wherever it moves, so ``where`` finds the folder the results were computed from,
    and ``place`` maps an output path inside the run there: results never land in the new
    run. Where the folder cannot be found (it was removed, or no ``/proc``), the write is
    refused in one line and nothing is written.
    """

    def __init__(self, run_dir: Path | str, doing: str = "it was read") -> None:
        self.named = Path(run_dir)
        self.doing = doing  # for the refusal: "RUN was replaced while <doing>"
        try:
            self.fd: int | None = os.open(self.named, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise GanforgeError(
                f"{self.named}: cannot open the run directory ({_reason(e)})"
            ) from None
        self.ident = _identity(self.fd)

    def moved(self) -> bool:
        """Whether the run's path no longer names the folder opened."""
        try:
            st = os.stat(self.named)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.ident

    def where(self) -> Path:
        """The run's folder now: its path as named, or where it was moved to (beside it)."""
        if not self.moved():
            return self.named
        now = None
        with contextlib.suppress(OSError, TypeError):
            now = Path(os.readlink(f"/proc/self/fd/{self.fd}"))
        if now is None or not now.is_dir() or _identity_of(now) != self.ident:
            raise GanforgeError(
                f"{self.named} was replaced while {self.doing} (train --overwrite moved the run "
                "away) and cannot be found; nothing written; run the command again"
            )
        if now.parent == Path(os.path.abspath(self.named)).parent:
            return self.named.with_name(now.name)  # said as the user named it: runs/a.replaced-…
        return now

    def place(self, path: Path | str) -> Path:
        """``path`` if it lies outside the run; else the same file in the folder opened."""
        path = Path(path)
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.named))
        except ValueError:
            return path
        return self.where() / rel

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunPin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _identity_of(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
