"""colab/medr3_demo.ipynb runs end to end on CPU (tiny model, 2 steps), as CI executes it."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from medr3_jax.trainer.checkpoints import Checkpointer
from medr3_jax.trainer.metrics import read_scalars

NOTEBOOK = Path(__file__).resolve().parents[1] / "colab" / "medr3_demo.ipynb"


def _kernel_manager(tmp_path: Path) -> KernelManager:
    """A python3 kernel running this interpreter, whatever kernelspecs the machine has."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _stdout(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


@pytest.mark.slow  # 60-70 s on 2 busy CPU cores (the tiny model's 2 steps are most of it)
def test_notebook_runs_tiny_stage3(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("MEDR3_NB_TINY", "1")
    monkeypatch.setenv("MEDR3_NB_STEPS", "2")
    monkeypatch.setenv("MEDR3_NB_WORKDIR", str(run))
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, like a Colab CPU runtime

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "parameters" in nb.cells[2].metadata.get("tags", []), "the parameters cell moved"
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('KERNEL_PREFIX=' + sys.prefix)"))
    client = NotebookClient(
        nb, km=_kernel_manager(tmp_path), timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert not errors
    printed = _stdout(nb)
    assert f"KERNEL_PREFIX={sys.prefix}\n" in printed  # the kernel ran this venv's python

    with Checkpointer(run / "stage3" / "checkpoints", read_only=True) as ckpt:
        assert ckpt.all_steps() == [2]
    scalars = read_scalars(run / "stage3" / "tb")
    assert [step for step, _ in scalars["reward/total"]] == [0, 1]
    for step, total in scalars["reward/total"]:
        assert f"step {step}: reward/total={total:+.3f}" in printed
    assert "step_000001.jsonl, row " in printed  # the sample rollout
    assert f"tensorboard --logdir {run}" in printed
    assert os.path.isfile(run / "stage3" / "rollouts" / "step_000001.jsonl")
