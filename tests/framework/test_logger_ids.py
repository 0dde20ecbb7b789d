"""The loggers' identities a run records, and which run a rerun in the same folder continues
(SLURM reruns a requeued job there). The resume through the CLI, read back with each logger's
reader, is test_logger_resume.py."""

import torch

from hylab.logger_ids import continued_loggers, prepare_loggers
from hylab.records import write_run_record
from tests.helpers import compose_run

LOGGERS = ["debug=limit", "logger=[tensorboard,wandb]"]


def test_a_rerun_in_the_same_folder_continues_its_loggers_from_the_newest_slurm_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    first = prepare_loggers(compose_run(LOGGERS, run_dir))
    assert first["tensorboard"]["save_dir"] == str(run_dir) and len(first["wandb"]["id"]) == 8
    write_run_record(run_dir, {"status": "running", "loggers": first})
    for number, step in ((1, 3), (2, 7), (10, 12)):  # Lightning resumes from the highest number
        torch.save({"global_step": step}, run_dir / f"hpc_ckpt_{number}.ckpt")

    cfg = compose_run(LOGGERS, run_dir)
    again = prepare_loggers(cfg, *continued_loggers(cfg, {}, run_dir))
    assert again == first
    assert cfg.logger.tensorboard.purge_step == 12 and cfg.logger.wandb.id == first["wandb"]["id"]

    write_run_record(run_dir, {"status": "completed", "loggers": first})  # a finished run is not continued
    cfg = compose_run(LOGGERS, run_dir)
    assert continued_loggers(cfg, {}, run_dir) == (None, None)
    assert prepare_loggers(cfg)["wandb"]["id"] != first["wandb"]["id"] and "purge_step" not in cfg.logger.tensorboard
