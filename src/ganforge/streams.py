"""Standard output whose reader may go away: ``ganforge train | head -2`` keeps training.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone (``| head``, ``| less``
quit early) raises ``BrokenPipeError``, wherever the print is: mid-run, that would end the
run without a checkpoint. ``guard()`` wraps ``sys.stdout`` and ``sys.stderr`` so that such a
write is dropped instead: the stream's descriptor is pointed at /dev/null (the interpreter's
own flush at exit then succeeds too) and every later write goes nowhere. ``ganforge`` runs
every command inside ``guarded()``: one that only prints ends normally, exit 0, without a
word; ``while_training`` adds the one line said on stderr (if it is still open) when stdout
goes while a run trains.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

_notes: list[str] = []  # said on stderr when stdout goes (the innermost while_training)
_said = False  # ... once per run


class _Guarded:
    """A text stream whose writes survive its reader going away (see the module's doc)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream, self.name, self.lost = stream, name, False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._lose()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._lose()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's
        return getattr(self.stream, name)

    def _lose(self) -> None:
        self.lost = True
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no descriptor: done
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        if self.name == "stdout":
            _say_note()


def _say_note() -> None:
    """The one line on stderr about stdout gone, once per run, while a run trains."""
    global _said
    if _said or not _notes or not _lost("stdout"):
        return
    _said = True
    print(_notes[-1], file=sys.stderr, flush=True)  # guarded: a closed stderr drops it


def _lost(name: str) -> bool:
    stream = getattr(sys, name)
    return isinstance(stream, _Guarded) and stream.lost


def _guard() -> bool:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once); True if this call wrapped them."""
    if isinstance(sys.stdout, _Guarded):
        return False
    sys.stdout = _Guarded(sys.stdout, "stdout")  # pyright: ignore[reportAttributeAccessIssue]
    sys.stderr = _Guarded(sys.stderr, "stderr")  # pyright: ignore[reportAttributeAccessIssue]
    return True


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Within this block a closed stdout or stderr drops the writes to it (see the module's
    doc). On the way out the streams are flushed (a last buffered line meets a closed pipe
    here, not in the interpreter's exit) and given back, unless they were guarded before."""
    wrapped = _guard()
    try:
        yield
    finally:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            stream.flush()
            if wrapped and isinstance(stream, _Guarded):
                setattr(sys, name, stream.stream)


@contextlib.contextmanager
def while_training(note: str) -> Iterator[None]:
    """``guarded()``, and if stdout goes (or has gone) while the run trains, ``note`` is said
    once on stderr: the run goes on, its progress goes nowhere."""
    global _said
    _said = False
    with guarded():
        _notes.append(note)
        try:
            _say_note()  # stdout gone before the run began
            yield
        finally:
            _notes.pop()
