"""A checkpoint carries weights and data, never code: every way a checkpoint or a run-store entry
is turned into a net refuses, in one line, a net node that names anything but the project's nets.

Two payloads, each proven live first (they do run when built without the check):
- `torch.load` of a pickle with weights_only=False: unpickling it creates a marker file;
- `numpy.savetxt`: building it writes a file (it once wrote a .pth into an environment).
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from hylab.errors import UserError
from hylab.net_targets import check_net_targets, is_project_net, targets
from tests.helpers import CONF_DIR, ROOT, compose_run, run_in_process
from tests.image.conftest import student_overrides

PAYLOADS = ["pickle", "savetxt"]
LEGACY_GPT = ROOT / "tests" / "fixtures" / "legacy_gpt_tiny.ckpt"


class MakesMarker:
    """Unpickling this creates the file at `path` (pickle calls open(path, 'w'))."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


class Payload:
    def __init__(self, kind: str, folder: Path):
        self.marker = folder / "unpickled.marker"  # exists if the pickle ran
        self.written = folder / "written.txt"  # exists if savetxt ran
        if kind == "pickle":
            evil = folder / "evil.pt"
            torch.save({"x": MakesMarker(str(self.marker))}, evil)
            self.node = {"_target_": "torch.load", "f": str(evil), "weights_only": False}
        else:
            self.node = {"_target_": "numpy.savetxt", "fname": str(self.written), "X": [[1.0, 2.0]]}

    def checkpoint(self, path: Path, nested: bool = False) -> Path:
        """A hylab checkpoint whose embedded net node is the payload (or holds it as an argument)."""
        net = {"_target_": "lightning_modules.image.nets.seresnet.seresnet_mnist", "in_chans": self.node} if nested else self.node
        torch.save({"hylab": {"config": {"model": {"net": net}, "data": {}}}, "state_dict": {}}, path)
        return path

    def assert_nothing_ran(self, error: BaseException) -> None:
        assert not self.marker.exists() and not self.written.exists()
        message = str(error)
        assert "\n" not in message and "not a net this project defines" in message, message


@pytest.fixture(params=PAYLOADS)
def payload(request, tmp_path) -> Payload:
    folder = tmp_path / "payload"
    folder.mkdir()
    return Payload(request.param, folder)


@pytest.fixture
def no_training(monkeypatch):
    """A planted store entry must be found: training a replacement would hide a wrong key."""
    def refuse(*args, **kwargs):
        raise AssertionError("the planted store entry was not found")
    monkeypatch.setattr("hylab.store.train_in_subprocess", refuse)


def plant_store_entry(experiment: str, overrides: list[str], store_dir, log_dir, checkpoint: Path) -> Path:
    """Put `checkpoint` into the store where load_stored_net(experiment, overrides, ...) looks."""
    from hylab.store import CHECKPOINT_FILE, ENTRY_FILE, compose_for, sha256_file, training_hash

    overrides = [str(o) for o in overrides]
    if store_dir:
        overrides.append(f"store.dir={store_dir}")
    cfg = compose_for(experiment, overrides, log_dir)
    folder = Path(store_dir or cfg.store.dir) / training_hash(cfg)
    folder.mkdir(parents=True)
    shutil.copy(checkpoint, folder / CHECKPOINT_FILE)
    record = {"key": folder.name, "checkpoint_sha256": sha256_file(folder / CHECKPOINT_FILE), "run_id": "planted", "run_dir": ""}
    (folder / ENTRY_FILE).write_text(json.dumps(record))
    return folder


def test_the_payloads_run_when_built_without_the_check(tmp_path):
    from hydra.utils import instantiate

    for kind in PAYLOADS:
        payload = Payload(kind, tmp_path)
        instantiate(payload.node)
    assert payload.marker.exists() and payload.written.exists()


def test_distillation_teacher_checkpoint(payload, tmp_path):
    with pytest.raises(UserError) as caught:
        run_in_process(student_overrides(str(payload.checkpoint(tmp_path / "t.ckpt"))), tmp_path / "run")
    payload.assert_nothing_ran(caught.value)
    assert "callbacks.distillation_teacher.checkpoint=" in str(caught.value)


def test_a_payload_nested_in_a_project_net_is_refused(payload, tmp_path):
    with pytest.raises(UserError) as caught:
        run_in_process(student_overrides(str(payload.checkpoint(tmp_path / "t.ckpt", nested=True))), tmp_path / "run")
    payload.assert_nothing_ran(caught.value)


def test_distillation_teacher_from_a_run_store_entry(payload, tmp_path, no_training):
    overrides = [*student_overrides("x"), "callbacks.distillation_teacher.checkpoint=null",
                 "callbacks.distillation_teacher.experiment=seresnet_digits", f"store.dir={tmp_path / 'store'}"]
    teacher = compose_run(overrides, tmp_path / "compose").callbacks.distillation_teacher
    plant_store_entry(teacher.experiment, list(teacher.overrides or []), teacher.store_dir, teacher.log_dir,
                      payload.checkpoint(tmp_path / "t.ckpt"))
    with pytest.raises(UserError) as caught:
        run_in_process(overrides, tmp_path / "run")
    payload.assert_nothing_ran(caught.value)


def test_hybrid_encoder_checkpoint(payload, tmp_path):
    overrides = ["experiment=hybrid_supcon_probe", "debug=limit", "callbacks.progress_bar=null", "trainer.max_epochs=1",
                 "callbacks.encoder_from_store.experiment=null",
                 f"callbacks.encoder_from_store.checkpoint={payload.checkpoint(tmp_path / 'e.ckpt')}"]
    with pytest.raises(UserError) as caught:
        run_in_process(overrides, tmp_path / "run")
    payload.assert_nothing_ran(caught.value)
    assert "callbacks.encoder_from_store.checkpoint=" in str(caught.value)


def test_har_base_model_from_a_run_store_entry(payload, tmp_path, no_training):
    overrides = ["experiment=har_finetune", "debug=limit", "callbacks.progress_bar=null"]
    base = compose_run(overrides, tmp_path / "run").callbacks.base_model
    plant_store_entry(base.base_experiment, [*base.base_overrides, *base.extra_base_overrides], base.store_dir,
                      base.log_dir, payload.checkpoint(tmp_path / "b.ckpt"))
    with pytest.raises(UserError) as caught:
        run_in_process(overrides, tmp_path / "run")
    payload.assert_nothing_ran(caught.value)
    assert "finetune.base=" in str(caught.value)


def test_gpt_checkpoint(payload, tmp_path):
    """A GPT checkpoint's net is built from its GPTConfig entry, which must be plain numbers."""
    checkpoint = torch.load(LEGACY_GPT, weights_only=True)
    checkpoint["gpt"]["config"] = payload.node
    path = tmp_path / "gpt.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UserError) as caught:
        run_in_process(["experiment=gpt_tiny", "task=generate", f"ckpt_path={path}"], tmp_path / "run")
    assert not payload.marker.exists() and not payload.written.exists()
    assert "\n" not in str(caught.value) and "not a GPTConfig of plain numbers" in str(caught.value)


def test_bench_hybrid_ckpt(payload, tmp_path, monkeypatch, capsys):
    from bench import hybrid

    monkeypatch.setattr(sys, "argv", ["bench.hybrid", "tome", "--ckpt", str(payload.checkpoint(tmp_path / "b.ckpt"))])
    with pytest.raises(SystemExit) as caught:
        hybrid.main()
    error = capsys.readouterr().err
    assert caught.value.code == 2 and error.startswith("error: --ckpt=") and error.count("\n") == 1
    payload.assert_nothing_ran(error.strip())


def test_bench_ris_checkpoint(payload, tmp_path):
    from bench.ris import load_model

    with pytest.raises(UserError) as caught:
        load_model(str(payload.checkpoint(tmp_path / "r.ckpt")))
    payload.assert_nothing_ran(caught.value)


def conf_net_targets() -> set[str]:
    """Every _target_ of a net node in conf/model: the nets the project's experiments build."""
    from omegaconf import OmegaConf

    found = set()
    for path in (CONF_DIR / "model").rglob("*.yaml"):
        node = OmegaConf.to_container(OmegaConf.load(path))
        net = node if path.parent.name == "net" else (node or {}).get("net")
        found |= set(targets(net)) if isinstance(net, dict) else set()
    return found


def test_every_net_the_configs_build_is_allowed():
    allowed = conf_net_targets()
    assert {"lightning_modules.gpt.nets.GPT", "lightning_modules.gpt.settings.GPTConfig", "lightning_modules.har.nets.HarCNN"} <= allowed
    assert all(is_project_net(target) for target in allowed), [t for t in allowed if not is_project_net(t)]


@pytest.mark.parametrize("target", [
    "torch.nn.Linear", "builtins.eval", "os.system", "this.s",  # importing `this` would print: it must stay unimported
    "lightning_modules.gpt.nets.torch",  # a module the nets module imported, not a net it defines
    "lightning_modules.hybrid.nets.streams.Path", "lightning_modules.hybrid.nets.streams.pooled",  # not a builder
    "lightning_modules.gpt.nets.GPT.__init__", "lightning_modules.gpt.module.GPTLanguageModel",  # not in a nets module
    "lightning_modules.nets.seresnet.seresnet_mnist",  # the layout before the families became packages
    "lightning_modules.gpt.settings.__builtins__", 42,
])
def test_anything_else_is_refused_in_one_line_before_it_is_imported(target):
    with pytest.raises(UserError) as caught:
        check_net_targets({"_target_": "lightning_modules.gpt.nets.GPT", "config": {"_target_": target}}, "x.ckpt", "teacher")
    assert "\n" not in str(caught.value) and str(target) in str(caught.value)
    assert "this" not in sys.modules


def test_an_interpolation_is_refused():
    with pytest.raises(UserError, match="interpolation"):
        check_net_targets({"_target_": "lightning_modules.har.nets.HarCNN", "channels": "${oc.env:HOME}"}, "x.ckpt")
