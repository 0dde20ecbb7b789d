"""bench.hybrid_levers: every row composes as run.py would, and the gate / ToMe measurements
compute what the net computes."""

import torch

from bench import hybrid_levers, hybrid_levers_eval as ev
from tests.helpers import compose_run
from tests.hybrid.conftest import tiny


def test_every_lever_row_composes_with_the_settings_it_states(tmp_path, capsys):
    hybrid_levers.rows(type("Args", (), {"lever": None, "seeds": [1], "log_dir": str(tmp_path), "dry_run": True})())
    printed = capsys.readouterr().out
    assert printed.count("uv run python run.py") == sum(len(rows) for rows in hybrid_levers.ROWS.values())
    cfg = compose_run(hybrid_levers.row_overrides("tome", "vit_p2", 2, str(tmp_path)), tmp_path / "run")
    assert (cfg.model.net.mode, cfg.model.net.vit.kwargs.patch_size, cfg.trainer.max_epochs, cfg.seed) == ("vit", 2, 6, 2)
    cfg = compose_run(hybrid_levers.row_overrides("sam", "asam0.5_noise0.4", 1, str(tmp_path)), tmp_path / "run2")
    sam = cfg.model.optimization.sam
    assert (sam.enabled, sam.rho, sam.adaptive, cfg.data.label_noise, cfg.model.net.mode) == (True, 0.5, True, 0.4, "cnn")


def test_gate_statistics_read_the_gate_the_forward_pass_uses(images):
    torch.manual_seed(0)
    net = tiny(mode="gated").eval()
    with torch.no_grad():
        embedding, gates = ev.fused(net.backbone, images, images)
        torch.testing.assert_close(embedding, net.backbone(images))  # same input to both streams: the net's own forward
    torch.testing.assert_close(gates[:, 0].mean(), net.backbone.last_gate["cnn"])
    labels = net(images).argmax(-1)
    rows = ev.gate_statistics(net, images, labels, background=-0.4)
    assert [r["condition"] for r in rows] == ["clean", "noise -> cnn", "noise -> vit", "occlude -> cnn", "occlude -> vit"]
    assert rows[0]["acc"] == 1.0 and all(0 <= r["gate_cnn"] <= 1 and 0 <= r["fell"] <= 1 for r in rows[1:])
    concat = ev.gate_statistics(tiny(mode="concat"), images, labels, background=-0.4)
    assert all(r["gate_cnn"] == r["gate_vit"] == 1.0 for r in concat)


def test_tome_curve_merges_the_stated_share_and_plots(images, tmp_path):
    net = ev.vit_net(patch=4, width=32, depth=2)  # 49 patch tokens
    rows = ev.speed_curve(net, images, [0.0, 0.4], rounds=1, repeats=1)
    assert [(r["r"], r["tokens"]) for r in rows] == [(0, 50), (10, 50 - 2 * 10)]
    assert rows[0]["speedup"] == 1.0 and net.backbone.vit.tome_r == 0
    path = tmp_path / "tome.png"
    ev.plot_tome({(4, 32): rows}, {1: {0.0: 0.9, 0.4: 0.89}}, [0.0, 0.4], str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
