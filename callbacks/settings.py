"""Settings of the shared callbacks that have a schema (torch-free; see hylab.settings)."""

from dataclasses import dataclass


@dataclass
class DistillationTeacherSettings:
    """The teacher: a hylab checkpoint, or an experiment (+ overrides) from the run store."""

    checkpoint: str | None = None
    experiment: str | None = None
    overrides: list[str] | None = None
    log_dir: str | None = None
    store_dir: str | None = None
    task: str = "fit"
    compile: bool = False
    # an experiment whose stored run (with this run's overrides) the student is compared with
    baseline: str | None = None

    def __post_init__(self):
        if bool(self.checkpoint) == bool(self.experiment):
            raise ValueError("give exactly one of checkpoint=<path to .ckpt> or experiment=<name>")


SCHEMAS = {"DistillationTeacher": DistillationTeacherSettings}
