"""Settings of the shared callbacks that have a schema (torch-free; see hylab.settings)."""

from dataclasses import dataclass

from hylab.net_source import NetSource


@dataclass
class DistillationTeacherSettings(NetSource):
    """The teacher: a hylab checkpoint, or an experiment (+ overrides) from the run store."""

    task: str = "fit"
    compile: bool = False
    # an experiment whose stored run (with this run's overrides) the student is compared with
    baseline: str | None = None


SCHEMAS = {"DistillationTeacher": DistillationTeacherSettings}
