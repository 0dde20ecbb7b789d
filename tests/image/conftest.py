"""Fixtures of the image tests: a small teacher checkpoint, and the overrides of a student taught by it."""

import pytest

from tests.helpers import run_in_process


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory) -> str:
    """A (barely trained) SE-ResNet on the 8x8 digits; fully convolutional, so it reads 28x28 too."""
    # Kept at a fixed place under the session's base temp folder: trained once per session.
    folder = tmp_path_factory.getbasetemp() / "deit_teacher"
    done = folder / "checkpoint_path.txt"
    if not done.is_file():
        overrides = ["experiment=seresnet_digits", "debug=limit", "callbacks.progress_bar=null", "test_after_fit=false", "trainer.max_epochs=1"]
        _, record = run_in_process(overrides, folder / "run")
        done.write_text(record["checkpoints"]["last"])
    return done.read_text()


def teacher_from(checkpoint: str) -> list[str]:
    return [f"callbacks.distillation_teacher.checkpoint={checkpoint}", "callbacks.distillation_teacher.experiment=null"]


def student_overrides(checkpoint: str, *extra: str) -> list[str]:
    """deit_distill on the 8x8 digits (2x2 patches -> a 4x4 grid), teacher from a checkpoint."""
    return [
        "experiment=deit_distill", "data=digits", "model.net.patch_size=2", "debug=limit",
        "callbacks.progress_bar=null", "callbacks.early_stopping=null", "test_after_fit=false",
        *teacher_from(checkpoint), *extra,
    ]
