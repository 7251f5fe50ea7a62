"""TensorBoard event files for a run (``train.tensorboard``): a mirror of ``log.jsonl``.

Scalars are read back from the run's own log (training records and whatever evaluation
records were appended), so TensorBoard always shows exactly what ``log.jsonl`` holds; sample
grids are added as images. Files go to ``RUN_DIR/tensorboard``, read by the stock TensorBoard:
``tensorboard --logdir RUN_DIR/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .runlog import numbers, parse_record

TB_DIR = "tensorboard"
TRAIN_TAGS = {
    "loss_d": "loss/D",
    "loss_g": "loss/G",
    "d_real": "D_output/real",
    "d_fake": "D_output/fake",
    "img_s": "throughput/images_per_s",
}
NOT_SCALARS = ("step", "epoch", "images", "time", "best")


def scalars(rec: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tags and values of one log record (training or evaluation)."""
    if isinstance(rec.get("eval"), dict):
        return {f"eval/{k}": v for k, v in numbers(rec["eval"]).items()}
    rest = {k: v for k, v in rec.items() if k not in NOT_SCALARS}
    return {TRAIN_TAGS.get(k, f"train/{k}"): v for k, v in numbers(rest).items()}


class TensorBoard:
    """Writes new ``log.jsonl`` records and sample images as events; all no-ops when disabled.

    ``start_step`` > 0 (a resumed run) hides events from the earlier process at or after
    that step, as the log itself was cut back to the checkpoint.
    """

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
        self._writer_class, self.dir = SummaryWriter, Path(run_dir) / TB_DIR
        self.log_path = Path(run_dir) / "log.jsonl"
        # records already in the log were mirrored by the process that wrote them
        self.seen = self._lines()
        self._open(start_step or None)

    def _open(self, purge_step: int | None) -> None:
        """A new event file; TensorBoard hides older events at or after ``purge_step``."""
        if self.writer is not None:
            self.writer.close()
        self.writer = self._writer_class(str(self.dir), purge_step=purge_step)

    def _lines(self) -> list[bytes]:
        """The log's complete lines (one still being written waits for the next call)."""
        if not self.log_path.exists():
            return []
        data = self.log_path.read_bytes()
        return data[: data.rfind(b"\n") + 1].splitlines()

    def sync(self) -> int:
        """Mirror the log lines written since the last call; return how many.

        The whole log is compared with what was mirrored: when it was cut back (a rollback
        to a checkpoint), the writer is reopened with a purge step, so TensorBoard hides the
        dropped events and shows the new records of those steps instead.
        """
        if self.writer is None:
            return 0
        lines = self._lines()
        k = 0
        while k < min(len(lines), len(self.seen)) and lines[k] == self.seen[k]:
            k += 1
        records = []
        for line in lines[k:]:
            rec = parse_record(line)  # the log's one reader: None for a damaged line
            if rec is not None:
                records.append(rec)
        if k < len(self.seen) and records:  # cut back, then new records from this step on
            self._open(min(r["step"] for r in records))
        for rec in records:
            for tag, value in scalars(rec).items():
                self.writer.add_scalar(tag, value, rec["step"])
        self.seen = lines
        self.writer.flush()
        return len(records)

    def image(self, path: Path, step: int, tag: str = "samples") -> None:
        """Add an image file (a sample grid or 2-D scatter) at ``step``."""
        if self.writer is None:
            return
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
        self.writer.add_image(tag, arr, step, dataformats="HWC")

    def close(self) -> None:
        """Mirror what is left of the log and close the event file."""
        if self.writer is not None:
            self.sync()
            self.writer.close()
            self.writer = None
