"""benchmarks/device.py --quick: the device check runs on the CPU with torch's packages only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_idx

ROOT = Path(__file__).resolve().parents[1]
# ganforge's dependencies that a machine with only torch, torchvision, numpy, pillow, pyyaml,
# safetensors, tqdm, rich and scipy lacks: importing any of them fails in the child
MISSING = ("matplotlib", "tensorboard", "torch_fidelity", "ipywidgets", "onnx", "onnxruntime")
# sitecustomize runs at the start of every Python process with it on sys.path: the script
# and the DDP process it spawns
BLOCK = f"""import sys
for name in {MISSING!r}:
    sys.modules[name] = None  # `import name` raises ModuleNotFoundError; find_spec: None
"""


def test_quick_mode_prints_every_part_without_optional_packages(tmp_path):
    idx = write_idx(tmp_path / "idx", n_train=64, n_test=16)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK)
    path = os.pathsep.join([str(tmp_path / "site"), str(ROOT / "src")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    env["GANFORGE_CACHE"] = str(tmp_path / "cache")
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device.py"), "--quick", "--fmnist", str(idx)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    peak = next(line for line in lines if line.startswith("bf16 dense peak"))
    assert float(peak.split(":")[1].split()[0]) > 0
    row = next(line for line in lines if line.startswith("vanilla-fmnist")).split()
    assert row[1] == "8" and float(row[2]) > 0 and row[3] == "-" and float(row[4]) > 0
    assert float(row[6]) == 0.0  # train_step and its batches: no host sync per step
    ddp = next(line for line in lines if line.startswith("DDP smoke"))
    assert "ok: gloo, 2 steps" in ddp
    folder = next(line for line in lines if line.startswith("folder-plus-large"))
    assert "4 steps of batch 8 on 64 images" in folder and "FD " in folder
    fd = float(folder.split("FD ")[1].split()[0])
    assert fd > 0
