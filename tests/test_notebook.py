"""examples/quickstart.ipynb runs top to bottom (tiny settings) without an error cell."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import write_idx

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    # Fashion-MNIST in its real format (random images), found through $GANFORGE_DATA
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=320, n_test=128)
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("QUICKSTART_STEPS", "6")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first error cell
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    images = [i for i, outs in outputs.items() for o in outs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "the grids were not shown inline"  # ShowSamples + 3 grid() cells
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) for outs in outputs.values() for o in outs
    )
    assert "'fd'" in text and "'recall'" in text  # run.evaluate's mapping
    assert (tmp_path / "runs").is_dir()
