"""Gates made visible: hooks that leave the network's output alone, TensorBoard gate maps and study-only hparams of
a tiny run, and `scseg-gates` statistics checked against a hand computation."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
import torch

from scseg.cli.gates import main as gates_main
from scseg.engine.gates import BlockGateStats, Gates, SEBlock, capture_gates, find_se_blocks, map_views
from scseg.engine.run import run_training
from scseg.models import create_model
from scseg.models.se import ConcurrentSE


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def _session_hparams(events) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in events.PluginTagToContent("hparams").values()]
    session = next(d.session_start_info for d in data if d.HasField("session_start_info"))
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in session.hparams.items()}


def test_capture_recomputes_the_gates_the_block_applied_without_changing_the_output():
    torch.manual_seed(0)
    model = create_model("unet", 3, se="scse", filters=4, depth=2).eval()
    x = torch.randn(2, 1, 16, 20)
    plain = model(x)
    seen = {}

    def keep(module, args, out) -> None:
        seen["io"] = (args[0], out)

    handle = model.encoders[0][-1].register_forward_hook(keep)
    with capture_gates(model) as capture:
        hooked = model(x)
    handle.remove()
    torch.testing.assert_close(hooked, plain, rtol=0, atol=0)
    gates = capture.collected()
    assert list(gates) == ["enc1", "enc2", "dec2", "dec1"]
    x_in, out = seen["io"]
    channel, spatial = gates["enc1"].channel, gates["enc1"].spatial
    assert channel.shape == (2, 4) and spatial.shape == (2, 16, 20)
    # scSE (add) = x * c + x * s: the captured gates reproduce the block's output
    torch.testing.assert_close(x_in * channel[:, :, None, None] + x_in * spatial[:, None], out)
    assert gates["enc2"].spatial.shape == (2, 8, 10)
    assert all(not b.module._forward_hooks for b in find_se_blocks(model))  # the capture removed its hooks


def test_block_statistics_per_structure_at_the_gate_resolution():
    module = ConcurrentSE(3)
    stats = BlockGateStats(SEBlock("enc2", "encoder", "encoders.1.2", module), num_classes=3)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :2] = 1  # the top-left 2x2 window: class 1 at half resolution (nearest picks the top-left pixel)
    labels[0, 2:, 2:] = 2
    spatial = torch.tensor([[[0.9, 0.2], [0.4, 0.6]]])
    channel = torch.tensor([[0.5, 0.9, 0.1]])
    stats.add(Gates(channel, spatial), labels)
    rows = {(r["gate"], r["region"]): r for r in stats.rows(["background", "alpha", "beta"])}
    assert rows["sse", "alpha"]["mean"] == pytest.approx(0.9, abs=1e-6) and rows["sse", "alpha"]["n"] == 1
    assert rows["sse", "beta"]["mean"] == pytest.approx(0.6, abs=1e-6)
    assert rows["sse", "background"]["mean"] == pytest.approx(0.3, abs=1e-6) and rows["sse", "background"]["n"] == 2
    assert rows["sse", "background"]["std"] == pytest.approx(0.1, abs=1e-6)
    assert rows["sse", "alpha"]["resolution"] == "2x2"
    cse = rows["cse", "all"]
    assert cse["mean"] == pytest.approx(0.5, abs=1e-6) and cse["std"] == pytest.approx(
        np.std([0.5, 0.9, 0.1]), abs=1e-6
    )
    assert cse["mean_abs_dev_from_half"] == pytest.approx(0.8 / 3, abs=1e-6)


def test_tiny_scse_run_logs_gate_maps_study_hparams_and_gate_statistics(tiny_config, capsys):
    positions = ["se.positions=[encoder,bottleneck,decoder]"]
    result = run_training(tiny_config("unet", "se=scse", *positions))
    events = _events(result.run_dir)
    blocks = ["enc1", "enc2", "bottleneck", "dec2", "dec1"]
    images, histograms = set(events.Tags()["images"]), set(events.Tags()["histograms"])
    assert {f"gates/sse/{b}" for b in blocks} | {f"gates/cse_bars/{b}" for b in blocks} <= images
    assert {f"gates/cse/{b}" for b in blocks} == histograms
    heat = events.Images("gates/sse/bottleneck")[-1]
    assert heat.width == 2 * 32 and heat.height > 2 * 32  # heat map | over the slice, 2 slices, colour bar
    hparams = _session_hparams(events)
    assert set(hparams) == {"arch", "se", "aggregation", "se_reduction", "seed", "se_positions"}
    assert hparams["se"] == "scse" and hparams["se_positions"] == "encoder+bottleneck+decoder"
    assert hparams["se_reduction"] == 2
    settings = events.Tensors("run/settings/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| lr |" in settings and "| n_params |" in settings and "| loss |" in settings

    capsys.readouterr()
    assert gates_main([str(result.run_dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "bottleneck" in out and "wrote" in out
    with (result.run_dir / "gates_val.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["block"] for r in rows if r["gate"] == "cse"] == blocks
    n_classes = len([r for r in rows if r["gate"] == "sse" and r["block"] == "enc1"])
    assert n_classes == len({r["region"] for r in rows if r["gate"] == "sse"}) > 2
    for row in rows:  # a structure absent at a block's resolution has no mean
        assert 0.0 < float(row["mean"]) < 1.0 if int(row["n"]) else row["mean"] == ""
    assert {r["resolution"] for r in rows if r["block"] == "bottleneck" and r["gate"] == "sse"} == {"8x8"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (result.run_dir / "gates_val.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_run_without_se_logs_no_gates_and_default_hparams(tiny_config, capsys):
    result = run_training(tiny_config("unet"))
    events = _events(result.run_dir)
    assert not [t for t in events.Tags()["images"] + events.Tags()["histograms"] if t.startswith("gates/")]
    assert "val/overlay" in events.Tags()["images"]
    assert set(_session_hparams(events)) == {"arch", "se", "aggregation", "se_reduction", "seed"}
    assert gates_main([str(result.run_dir)]) == 2
    assert "no SE block" in capsys.readouterr().err


# Every map each new module declares, as TensorBoard shows it: (map, image kind) per block; the tags are
# gates/<module>/<map>/<site>. coord's a_h x a_w and Project & Excite's excitation are averaged over channels.
MODULE_MAPS = {
    "cbam": ["channel_gate", "spatial_gate"],
    "eca": ["channel_gate"],
    "coord": ["attention"],
    "project_excite": ["attention"],
    "attention_gate": ["attention"],
}
# tiny U-Net (4 filters): CBAM's default r = 16 needs 16 channels
MODULE_OVERRIDES = {"cbam": ["se.reduction=2"]}


def _assert_module_maps(tiny_config, module: str) -> object:
    result = run_training(tiny_config("unet", f"se={module}", *MODULE_OVERRIDES.get(module, [])))
    events = _events(result.run_dir)
    images = set(events.Tags()["images"])
    sites = ["skip2", "skip1"] if module == "attention_gate" else ["enc1", "enc2", "dec2", "dec1"]
    expected = {f"gates/{module}/{name}/{site}" for name in MODULE_MAPS[module] for site in sites}
    assert {t for t in images if t.startswith("gates/")} == expected
    assert not events.Tags()["histograms"]
    for tag in expected:
        image = events.Images(tag)[-1]
        if tag.split("/")[2] == "channel_gate":  # bars: one panel per slice
            assert image.height > 0 and image.width >= 4
        else:  # heat map | over the slice, 2 slices of 32 x 32, colour bar
            assert image.width == 2 * 32 and image.height > 2 * 32
    return result


def test_tiny_cbam_and_attention_gate_runs_log_every_map_and_gate_statistics(tiny_config, capsys):
    _assert_module_maps(tiny_config, "cbam")
    result = _assert_module_maps(tiny_config, "attention_gate")
    capsys.readouterr()
    assert gates_main([str(result.run_dir), "--split", "val", "--no-figure"]) == 0
    assert "skip1" in capsys.readouterr().out
    with (result.run_dir / "gates_val.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["block"], r["gate"], r["map"]) for r in rows} == {
        ("skip2", "sse", "attention"),
        ("skip1", "sse", "attention"),
    }
    assert {r["resolution"] for r in rows if r["block"] == "skip1"} == {"32x32"}


def test_tiny_eca_and_coord_runs_log_every_map(tiny_config):
    _assert_module_maps(tiny_config, "eca")
    _assert_module_maps(tiny_config, "coord")


def test_tiny_project_excite_run_logs_its_excitation(tiny_config):
    _assert_module_maps(tiny_config, "project_excite")


def test_map_views_of_every_module_shape_and_name():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    for module, names in MODULE_MAPS.items():
        options = {"se_reduction": 2} if module == "cbam" else {}
        model = create_model("unet", 3, se=module, filters=4, depth=2, **options).eval()
        with capture_gates(model) as capture:
            model(x)
        gates = capture.collected()
        for block in capture.blocks:
            views = map_views(block, gates[block.name])
            assert [v.name for v in views] == names, module
            for view in views:
                assert view.tag == f"gates/{module}/{view.name}/{block.name}" and view.histogram_tag is None
                size = 16 if block.name in ("enc1", "dec1", "skip1") else 8
                expected = (2, 4) if view.kind == "channel" else (2, size, size)
                assert tuple(view.values.shape) == expected and 0 < float(view.values.min()) <= 1
    coord = create_model("unet", 3, se="coord", filters=4, depth=2).eval()
    with capture_gates(coord) as capture:
        coord(x)
    block = capture.blocks[0]
    raw = capture.collected()[block.name].other
    product = (raw["attention_h"] * raw["attention_w"]).mean(dim=1)
    torch.testing.assert_close(map_views(block, capture.collected()[block.name])[0].values, product)
