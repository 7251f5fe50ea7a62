"""The data a run trains on, checked where it can change under the run.

At a resume, the data's identity (``data/identity.py``) is compared with the one the
checkpoint recorded: other data (files added, removed or edited, another folder, other data
settings) is refused in one line saying what changed, before anything is written, unless
``data.allow_changed=true`` asks for it (that resume only). A checkpoint written before
ganforge recorded its data resumes as before.

During a streamed run, a file that cannot be decoded when training reads it (removed or
replaced since the run began) stops the run like a preemption does: the checkpoint of the
last completed step is saved first, and the line says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..data.identity import SETTINGS, changed, read_record
from ..data.stream import StreamedFileError
from ..errors import DataError
from .resume import config_changes

if TYPE_CHECKING:
    from collections.abc import Callable

    from .callbacks import TrainState

ALLOW = "--set data.allow_changed=true"


def check_resume_data(
    run_dir: Path,
    cfg: Config,
    counters: dict[str, Any],
    record: dict[str, Any],
    say: Callable[[str], None],
) -> None:
    """Refuse (DataError) a resume whose data is not the data of its checkpoint, unless
    ``data.allow_changed``; then say once what changed."""
    settings = [
        c for c in config_changes(run_dir, cfg) if c.split(" ")[0].removeprefix("data.") in SETTINGS
    ]
    step = counters["step"]
    what = changed(counters.get("data"), read_record(run_dir), record, settings, step)
    if what is None:
        return
    if cfg.data.allow_changed:
        say(f"data.allow_changed: {what}; training goes on with the data as it is now")
        return
    raise DataError(
        f"cannot resume {run_dir}: {what}; nothing was changed; restore the data the run was "
        f"trained on, or go on with the changed data on purpose: {ALLOW}"
    )


def lost_file(state: TrainState, err: StreamedFileError, step: int, first: int) -> DataError:
    """Save the checkpoint of ``step`` (the last completed one; ``first``: this session's
    first) and return the one-line error that says so. Under torchrun the ranks would have
    to agree on a checkpoint: the file's error stays as it is."""
    if state.distributed:
        return err
    run = state.run_dir
    again = f"ganforge train --resume {run}"
    if step == 0:
        return DataError(
            f"{err.problem}; streamed images are decoded as training reads them: stopped "
            f"before the first step, nothing to save; fix or remove the file, then resume "
            f"with '{again}'"
        )
    if step == first:
        done = f"stopped at step {step}, where this resume began (its checkpoint is kept)"
    else:
        state.step, state.epoch = step, (step - 1) // state.steps_per_epoch + 1
        state.save_now()
        done = f"stopped after step {step}, checkpoint saved"
    return DataError(
        f"{err.problem}; streamed images are decoded as training reads them: {done}; restore "
        f"the file and continue with '{again}', or go on without it on purpose: "
        f"'{again} {ALLOW}'"
    )
