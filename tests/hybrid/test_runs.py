"""Every hybrid experiment end to end through the real config path (fast_dev_run), settings
schemas, and the encoder taken from the run store."""

import math

import pytest

from datamodules.image.sources import DEBIAN_FASHION_MNIST
from tests.helpers import EXPERIMENTS, assert_bad_setting, check_settings, run_in_process

HYBRID = [e for e in EXPERIMENTS if e.startswith("hybrid_")]
FROM_STORE = ("hybrid_supcon_probe", "hybrid_lora")
QUICK = ["debug=limit", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.max_epochs=1"]


def as_list(overrides: list[str]) -> str:
    return "[" + ",".join(f"'{o}'" for o in overrides) + "]"


def overrides_for(experiment: str) -> list[str]:
    return [f"experiment={experiment}", "debug=fdr", "callbacks.progress_bar=null"]


@pytest.mark.parametrize("experiment", HYBRID)
def test_every_experiment_fits_its_schemas(experiment, tmp_path):
    check_settings([f"experiment={experiment}"], tmp_path / "run")


@pytest.mark.parametrize("override,message", [
    ("model.net.mode=both", r"^model.net.mode='both' is not allowed; expected one of 'cnn', 'vit', 'concat', 'gated'$"),
    ("model.loss.name=focal", r"^model.loss.name='focal' is not allowed"),
    ("model.optimization.lookahead.alpha=2", r"^model.optimization.lookahead.alpha=2.0 is out of range"),
    ("model.net.tome.r=-1", r"^model.net.tome.r=-1 is out of range"),
    ("model.loss.edl.variant=l2", r"^model.loss.edl.variant='l2' is not allowed"),
])
def test_bad_values_fail_with_one_line(override, message, tmp_path):
    assert_bad_setting(["experiment=hybrid_ce", override], message, tmp_path / "run")


def cpu_experiments():
    """hybrid_ce runs in the fast tests; the other recipes take 10-30 s each on 2 shared cores."""
    return [pytest.param(e, marks=[] if e == "hybrid_ce" else [pytest.mark.slow])
            for e in HYBRID if e not in FROM_STORE]


@pytest.mark.parametrize("experiment", cpu_experiments())
def test_experiment_fast_dev_run(experiment, tmp_path):
    value, record = run_in_process(overrides_for(experiment), tmp_path / "run")
    assert record["status"] == "completed" and record["experiment"] == experiment
    assert math.isfinite(record["metrics"]["test/loss"]) and math.isfinite(record["metrics"]["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", FROM_STORE)
def test_encoder_comes_from_the_store_and_is_reused(experiment, tmp_path):
    store = [f"callbacks.encoder_from_store.overrides={as_list(QUICK)}", f"store.dir={tmp_path / 'store'}"]
    if experiment == "hybrid_lora":
        if not DEBIAN_FASHION_MNIST.is_dir():
            pytest.skip("Fashion-MNIST not installed")
        store = [f"callbacks.encoder_from_store.overrides={as_list(['data=fashion_mnist', '+data.train_subset=256', *QUICK])}", store[1]]
    # a few real steps rather than fast_dev_run, so the probe writes the checkpoint compared below
    # (and is itself kept out of the store, which then holds the encoder only)
    quick = [f"experiment={experiment}", "callbacks.progress_bar=null", "store.register_runs=false", *QUICK]
    _, first = run_in_process([*quick, *store], tmp_path / "first")
    assert first["status"] == "completed"
    entries = list((tmp_path / "store").glob("*/entry.json"))
    assert len(entries) == 1
    if experiment == "hybrid_supcon_probe":
        assert_probe_reads_the_stored_encoder(entries[0].parent / "model.ckpt", first["checkpoints"]["best"])
    _, second = run_in_process([*quick, *store], tmp_path / "second")
    assert second["status"] == "completed" and list((tmp_path / "store").glob("*/entry.json")) == entries


def assert_probe_reads_the_stored_encoder(stored: str, probe: str) -> None:
    """The probe's backbone is the stored SupCon encoder, bit for bit (loaded, and frozen through
    training), and its head reads the backbone's output (fusion_dim wide), not the projection."""
    import torch

    encoder = torch.load(stored, weights_only=True)["state_dict"]
    trained = torch.load(probe, weights_only=True)["state_dict"]
    backbone = [k for k in encoder if k.startswith("net.backbone.")]
    assert backbone and all(torch.equal(encoder[k], trained[k]) for k in backbone)
    assert any(k.startswith("net.projection.") for k in encoder)
    assert trained["net.head.weight"].shape[1] == encoder["net.backbone.norm.weight"].shape[0]
