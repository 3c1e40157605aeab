"""``run`` after ``train`` on one workflow file: the checkpoints ``train`` wrote are used when the workflow sets
none, and ``run`` before ``train`` names the paths ``train`` writes. No chunk is mapped: an unknown ``--only``
chunk id stops the run right after its inputs (model files included) were checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from miso_mapper.errors import MisoError, UsageError
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.progress import RunProgress
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.trained import with_trained_checkpoints

from .test_pipeline import demo_workflow, write_yaml

OFF_REGION = ["r0001c0001"]  # a chunk of the grid outside the demo region: the run stops after its checks


class _NoServer:
    stac_url = "http://127.0.0.1:9/"


class Notices(RunProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def notice(self, line: str) -> None:
        self.lines.append(line)


def _miso_workflow(tmp_path, **model):
    return demo_workflow(_NoServer(), tmp_path / "out", grid={"halo": 175},
                         model={"kind": "miso", "size": "tiny", **model})


def test_run_uses_the_checkpoint_train_wrote(tmp_path):
    from miso_mapper.inference.synthetic import seeded_network
    from miso_mapper.model import save_checkpoint

    wf = _miso_workflow(tmp_path)
    written = RunLayout.of(wf).train.checkpoint("permafrost")
    assert written == tmp_path / "out" / "train" / "permafrost.safetensors"
    written.parent.mkdir(parents=True)
    save_checkpoint(seeded_network("permafrost", "tiny", seed=1), written)

    filled, note = with_trained_checkpoints(wf)
    assert filled.model.permafrost_checkpoint == written and filled.model.taxonomy_checkpoint is None
    assert note == f"model: using the checkpoints `train` wrote: permafrost {written}"
    notices = Notices()
    with pytest.raises(UsageError, match="not in the planned region"):  # after the model files were checked
        run_workflow(wf, only=OFF_REGION, progress=notices)
    assert notices.lines == [note]


def test_a_checkpoint_set_in_the_workflow_wins(tmp_path):
    wf = _miso_workflow(tmp_path, taxonomy_checkpoint=str(tmp_path / "mine.safetensors"))
    train = RunLayout.of(wf).train.checkpoint("permafrost")
    train.parent.mkdir(parents=True)
    train.write_bytes(b"not used")
    assert with_trained_checkpoints(wf) == (wf, None)


def test_run_before_train_names_the_paths_train_writes(tmp_path):
    wf = _miso_workflow(tmp_path)
    train = tmp_path / "out" / "train"
    with pytest.raises(MisoError) as info:
        run_workflow(wf, only=OFF_REGION)
    message = str(info.value)
    assert "\n" not in message
    for task in ("permafrost", "taxonomy"):
        assert str(train / f"{task}.safetensors") in message
    assert "miso-mapper train CONFIG" in message and "model.permafrost_checkpoint" in message
    assert with_trained_checkpoints(wf, required=False) == (wf, None)


def test_run_before_train_on_the_command_line(tmp_path):
    path = write_yaml(_miso_workflow(tmp_path), tmp_path / "wf.yaml")
    proc = subprocess.run([sys.executable, "-m", "miso_mapper.cli", "run", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "out" / "train" / "permafrost.safetensors") in proc.stderr.replace("\n", "")
