"""The distillation teacher callback with real Trainers: what the teacher sees, where it lives,
and that SWA / EMA average the student alone (and use the averaged weights)."""

import math

import lightning as L
import pytest
import torch

from callbacks.distillation_teacher import DistillationTeacher
from hylab.errors import UserError
from hylab.trainer_tasks import built
from tests.helpers import compose_run, run_in_process
from tests.image.conftest import student_overrides



class Probe(L.Callback):
    """Runs after the teacher callback and the weight-averaging callbacks; records what they did."""

    def __init__(self, expect_mixed: bool):
        self.expect_mixed = expect_mixed
        self.checked_batches = 0
        self.train_weights = self.val_weights = None
        self.received = None  # the teacher outputs the student was handed for this batch

    def watch(self, student) -> None:
        receive = student.receive_teacher_outputs

        def recording(outputs):
            self.received = outputs
            receive(outputs)

        student.receive_teacher_outputs = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, target = batch
        teacher = next(cb for cb in trainer.callbacks if isinstance(cb, DistillationTeacher))
        outputs = self.received
        assert (target.ndim == 2) == self.expect_mixed  # soft targets: the batch was mixed before this hook
        assert outputs.logits.device == images.device and not outputs.logits.requires_grad
        with torch.no_grad():
            torch.testing.assert_close(outputs.logits, teacher.net(images))  # computed on these very images
        self.checked_batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_weights = torch.cat([p.detach().flatten().clone() for p in pl_module.net.parameters()])

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_weights = torch.cat([p.detach().flatten().clone() for p in pl_module.net.parameters()])


def fit_with_probe(overrides: list[str], run_dir, expect_mixed: bool = False):
    cfg = compose_run(overrides, run_dir)
    probe = Probe(expect_mixed)
    with built(cfg) as run:
        run.trainer.callbacks.append(probe)
        probe.watch(run.model)
        teacher = next(cb for cb in run.trainer.callbacks if isinstance(cb, DistillationTeacher))
        teacher_before = {k: v.clone() for k, v in teacher.net.state_dict().items()}
        run.trainer.fit(run.model, datamodule=run.datamodule)
        return run, probe, teacher, teacher_before


def teacher_is_separate(run, teacher, teacher_before) -> None:
    model = run.model
    teacher_params = {id(p) for p in teacher.net.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    optimizer_params = {id(p) for group in run.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not teacher_params & optimizer_params
    assert all(key.startswith(("net.", "token_distiller.", "train_", "val_", "test_")) for key in model.state_dict())
    # frozen, in eval mode, BatchNorm statistics untouched by training, SWA or EMA
    assert not teacher.net.training and not any(p.requires_grad for p in teacher.net.parameters())
    for key, value in teacher.net.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], msg=key)


def test_teacher_sees_the_mixed_batch_and_ema_averages_the_student_alone(teacher_checkpoint, tmp_path):
    mixing = ["data._target_=datamodules.image.mixing.MixingImageDataModule", "+data.mixing.mixup_alpha=0.8", "+data.mixing.cutmix_alpha=1.0"]
    overrides = student_overrides(teacher_checkpoint, *mixing, "callbacks=ema", "callbacks.ema.decay=0.5", "trainer.max_epochs=1")
    run, probe, teacher, before = fit_with_probe(overrides, tmp_path / "run", expect_mixed=True)
    assert probe.checked_batches == 3
    teacher_is_separate(run, teacher, before)
    # validation ran on the EMA of the training weights, not on the training weights themselves,
    # and the checkpoint holds the EMA weights (the training weights under current_model_state)
    assert not torch.allclose(probe.val_weights, probe.train_weights)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    # the average is the student's, all of it and nothing of the teacher
    assert set(checkpoint["state_dict"]) == set(checkpoint["current_model_state"]) == set(run.model.state_dict())
    params = {f"net.{name}" for name, _ in run.model.net.named_parameters()}  # not the BatchNorm buffers of a conv stem
    saved = torch.cat([v.flatten() for k, v in checkpoint["state_dict"].items() if k in params])
    torch.testing.assert_close(saved, probe.val_weights)
    current = torch.cat([v.flatten() for k, v in checkpoint["current_model_state"].items() if k in params])
    torch.testing.assert_close(current, probe.train_weights)


def test_swa_averages_the_student_and_recomputes_its_batchnorm(teacher_checkpoint, tmp_path):
    overrides = student_overrides(teacher_checkpoint, "callbacks=swa", "trainer.max_epochs=2", "model.net.conv_stem=true", "model.net.stem_chans=8")
    run, probe, teacher, before = fit_with_probe(overrides, tmp_path / "run")
    teacher_is_separate(run, teacher, before)
    swa = next(cb for cb in run.trainer.callbacks if type(cb).__name__ == "StochasticWeightAveraging")
    # the student holds the SWA average, and the last checkpoint and the last validation used it
    for averaged, current in zip(swa._average_model.net.parameters(), run.model.net.parameters()):
        torch.testing.assert_close(averaged, current)
    final = torch.cat([p.detach().flatten() for p in run.model.net.parameters()])
    torch.testing.assert_close(probe.val_weights, final)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(checkpoint["state_dict"]["net.patch_embed.proj.0.weight"], run.model.net.patch_embed.proj[0].weight)
    # the BN update pass: statistics reset, then one extra epoch of 3 batches (cumulative average)
    norms = [m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and set(swa.momenta) == set(norms)
    assert all(int(m.num_batches_tracked) == 3 and m.momentum == 0.1 for m in norms)
    assert run.trainer.current_epoch == 3  # 2 epochs + the BN epoch
    assert sum(p.numel() for p in swa._average_model.parameters()) == sum(p.numel() for p in run.model.parameters())


def test_bad_teacher_settings_fail_before_training(teacher_checkpoint, tmp_path):
    with pytest.raises(UserError, match="exactly one of checkpoint"):
        DistillationTeacher(checkpoint=teacher_checkpoint, experiment="seresnet_digits")
    with pytest.raises(UserError, match="exactly one of checkpoint"):
        DistillationTeacher()
    assert DistillationTeacher(checkpoint="/nonexistent.ckpt", task="test").net is None  # evaluation needs no teacher
    with pytest.raises(UserError, match="does not exist"):
        DistillationTeacher(checkpoint="/nonexistent.ckpt")
    with pytest.raises(UserError, match="predicts 10 classes, the student 12"):
        run_in_process(student_overrides(teacher_checkpoint, "data.num_classes=12"), tmp_path / "classes")
    with pytest.raises(UserError, match="need a teacher"):
        run_in_process(student_overrides(teacher_checkpoint, "~callbacks.distillation_teacher"), tmp_path / "none")
    token = ["model.token_distillation.enabled=true", "model.token_distillation.student_layers=[1,3]", "model.token_distillation.teacher_dims=[64,99]"]
    with pytest.raises(UserError, match=r"set teacher_dims=\[64, 128\]"):
        run_in_process(student_overrides(teacher_checkpoint, *token), tmp_path / "dims")
    with pytest.raises(UserError, match="blocks 0..3"):
        run_in_process(student_overrides(teacher_checkpoint, "model.token_distillation.enabled=true"), tmp_path / "layers")


@pytest.mark.gpu
def test_teacher_runs_on_the_batch_device_in_bf16(teacher_checkpoint, tmp_path):
    overrides = student_overrides(teacher_checkpoint, "trainer=gpu", "trainer.max_epochs=1")
    run, probe, teacher, _ = fit_with_probe(overrides, tmp_path / "run")
    assert next(teacher.net.parameters()).is_cuda and probe.checked_batches == 3


def test_one_teacher_pass_feeds_logits_and_token_maps(teacher_checkpoint, tmp_path):
    token = ["model.token_distillation.enabled=true", "model.token_distillation.student_layers=[1,3]",
             "model.distillation.mode=soft", "model.token_distillation.rel_warmup_epochs=1"]
    _, record = run_in_process(student_overrides(teacher_checkpoint, *token), tmp_path / "run")
    metrics = record["metrics"]
    assert {"train/loss_cls", "train/loss_dist", "train/loss_tok", "train/loss_rel", "train/tok_proj_std"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith("train/"))
    # the projection heads are part of the student: saved with it
    state = torch.load(record["checkpoints"]["last"], weights_only=True)["state_dict"]
    assert any(k.startswith("token_distiller.student_proj.0.") for k in state)
    assert any(k.startswith("token_distiller.teacher_proj.1.") for k in state)
    # no teacher weights under any prefix: squeeze-excitation layers exist only in the SE-ResNet teacher
    teacher_se = [k for k in torch.load(teacher_checkpoint, weights_only=True)["state_dict"] if ".se." in k]
    assert teacher_se and not any(".se." in k for k in state)
    # evaluating the student needs no teacher: the callback loads none for task=test
    test = [*student_overrides("/nonexistent.ckpt", *token), "task=test", f"ckpt_path={record['checkpoints']['last']}"]
    _, tested = run_in_process(test, tmp_path / "test")
    assert tested["status"] == "completed" and math.isfinite(tested["metrics"]["test/loss"])
