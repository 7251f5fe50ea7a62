"""TensorBoard events: the tags and values of log.jsonl, and the sample images, as the stock
TensorBoard reads them (EventAccumulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ganforge.cli import main
from ganforge.report.tb import TB_DIR, TensorBoard, scalars

from runhelpers import log_records

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run_dir: Path):
    acc = event_accumulator.EventAccumulator(
        str(run_dir / TB_DIR), size_guidance={"scalars": 0, "images": 0}
    )
    acc.Reload()
    return acc


def test_scalar_tags_of_records():
    train = {"step": 4, "epoch": 1, "images": 32, "loss_d": 0.7, "loss_g": 0.8, "d_real": 0.5,
             "d_fake": 0.4, "img_s": 900.0, "time": 1.2, "grad_norm": 3.0}  # fmt: skip
    assert scalars(train) == {
        "loss/D": 0.7,
        "loss/G": 0.8,
        "D_output/real": 0.5,
        "D_output/fake": 0.4,
        "throughput/images_per_s": 900.0,
        "train/grad_norm": 3.0,  # an unknown numeric key is kept, under train/
    }
    ev = {"step": 8, "eval": {"fd": 12.0, "modes": 7, "per_class": {"kl": 0.2}, "ok": True},
          "best": True}  # fmt: skip
    assert scalars(ev) == {"eval/fd": 12.0, "eval/modes": 7.0, "eval/per_class.kl": 0.2}


def test_train_with_tensorboard_flag(tmp_path):
    run = tmp_path / "tb-run"
    args = ["train", "-r", "gaussian-2d", "--out", str(run), "-q", "--tensorboard"]
    sets = ["data.points=64", "train.epochs=2", "train.log_every=4", "train.device=cpu"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    acc = _events(run)
    tags = acc.Tags()
    for tag in ("loss/D", "loss/G", "D_output/real", "D_output/fake", "throughput/images_per_s"):
        assert tag in tags["scalars"]
    records = log_records(run)
    got = acc.Scalars("loss/D")
    assert [e.step for e in got] == [r["step"] for r in records] == [4, 8, 12, 16]
    assert [e.value for e in got] == pytest.approx([r["loss_d"] for r in records], rel=1e-6)
    # one scatter image per epoch, at the step it was drawn, the size of the PNG
    assert tags["images"] == ["samples"]
    imgs = acc.Images("samples")
    assert [i.step for i in imgs] == [8, 16]
    with Image.open(run / "samples" / "epoch_0002.png") as png:
        assert (imgs[-1].width, imgs[-1].height) == png.size


def test_tensorboard_is_off_by_default(tmp_path):
    tb = TensorBoard(tmp_path, enabled=False)
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss_d": 1.0}) + "\n")
    assert tb.sync() == 0
    tb.image(tmp_path / "none.png", 1)  # nothing is read or written
    tb.close()
    assert not (tmp_path / TB_DIR).exists()


def test_sync_mirrors_new_complete_lines_only(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 1, "loss_d": 9.0}) + "\n")  # before: a resumed run's past
    tb = TensorBoard(tmp_path, enabled=True, start_step=1)
    with open(log, "a") as f:
        f.write(json.dumps({"step": 2, "loss_d": 1.0, "loss_g": 2.0}) + "\n")
        f.write('{"step": 3, "eval": {"fd": 5.0}, "be')  # a line still being written
        f.flush()
        assert tb.sync() == 1
        f.write('st": true}\n')
    tb.close()  # mirrors the rest
    acc = _events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss/D")] == [(2, 1.0)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/fd")] == [(3, 5.0)]


def test_a_log_cut_back_replaces_the_dropped_steps(tmp_path):
    """A rollback rewrites the log from a checkpoint: TensorBoard shows the new values only."""
    log = tmp_path / "log.jsonl"
    recs = [{"step": s, "loss_d": float(s)} for s in (2, 4, 6)]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tb = TensorBoard(tmp_path, enabled=True)  # these were mirrored already (resume at 0)
    with open(log, "a") as f:
        f.write(json.dumps({"step": 8, "loss_d": 8.0}) + "\n")
    assert tb.sync() == 1
    cut = recs[:1] + [{"step": 4, "loss_d": -4.0}, {"step": 6, "loss_d": -6.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in cut))  # back to step 2, redone
    assert tb.sync() == 2
    tb.close()
    acc = _events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss/D")] == [(4, -4.0), (6, -6.0)]
