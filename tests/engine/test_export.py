"""ONNX export (``scseg-export``, scseg.engine.export): every architecture and SE variant runs in onnxruntime as in
PyTorch, at sizes and batch sizes other than the traced one, with standard operators only; the run-folder command
writes the input convention beside the model and fails with one line on a bad folder."""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from scseg.cli.export import main  # noqa: E402
from scseg.engine.export import (  # noqa: E402
    INSTALL_HINT,
    ExportError,
    check_export,
    check_standard_ops,
    export_forward,
    export_model,
    graph_domains,
    plain_se_forward,
    sidecar_path_for,
    traceable_match_size,
)
from scseg.engine.loading import load_run  # noqa: E402
from scseg.engine.run import run_training  # noqa: E402
from scseg.models import ARCHITECTURES, create_model  # noqa: E402
from scseg.models.blocks import match_size  # noqa: E402
from scseg.models.se import create_se  # noqa: E402

# Small widths: what is tested is the graph, not the capacity.
SMALL = {
    "unet": {"filters": 4, "depth": 2},
    "sdnet": {"filters": 4, "depth": 2},
    "fcdensenet": {
        "growth_rate": 4,
        "first_filters": 4,
        "down_layers": [1, 1],
        "up_layers": [1, 1],
        "bottleneck_layers": 1,
    },
    "quicknat": {"num_filters": 4, "depth": 2},
}
VARIANTS = [("none", "add"), ("cse", "add"), ("sse", "add"), ("scse", "add"), ("scse", "max")]
TRACED = (16, 16)
# batch 1 at the traced size, batch 3 at one of the other parity in both axes (FC-DenseNet crops differently there)
SIZES = [(1, 16, 16), (3, 13, 11)]


def test_every_architecture_is_exported_here():
    presets = {name for name, builder in ARCHITECTURES.items() if isinstance(builder, functools.partial)}
    assert set(ARCHITECTURES) - presets == set(SMALL)


def _network(arch: str, se: str, aggregation: str, in_channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, 3, in_channels=in_channels, se=se, se_aggregation=aggregation, **SMALL[arch])
    for module in model.modules():  # running statistics far from (0, 1), so eval-mode BatchNorm matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
    return model.train()  # left in training mode: the export and the check must run the eval-mode network


@pytest.mark.parametrize("se, aggregation", VARIANTS, ids=[f"{s}-{a}" for s, a in VARIANTS])
@pytest.mark.parametrize("arch", list(SMALL))
def test_onnxruntime_matches_pytorch(tmp_path, arch, se, aggregation):
    model = _network(arch, se, aggregation)
    path = export_model(model, tmp_path / "model.onnx", in_channels=2, size=TRACED)

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert set(graph_domains(proto)) <= {"", "ai.onnx"}, graph_domains(proto)
    assert not any(n.op_type == "PythonOp" for n in proto.graph.node)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"]
    # the export leaves the network as it found it
    assert model.training
    assert all("forward" not in m.__dict__ for m in model.modules())

    differences = check_export(model, path, 2, SIZES)
    assert max(differences) <= 1e-4
    assert model.training


@pytest.mark.parametrize("aggregation", ["add", "max", "mul", "concat"])
def test_plain_se_forward_is_the_block(aggregation):
    torch.manual_seed(1)
    block = create_se("scse", 6, aggregation=aggregation).eval()
    x = torch.randn(2, 6, 5, 7)  # signed input: max(x*c, x*s) is not x * max(c, s)
    with torch.no_grad():
        torch.testing.assert_close(plain_se_forward(block)(x), block(x))
    for name in ("cse", "sse"):
        single = create_se(name, 6).eval()
        with torch.no_grad():
            torch.testing.assert_close(plain_se_forward(single)(x), single(x))


def test_traceable_match_size_crops_and_pads_like_match_size():
    x = torch.randn(1, 2, 9, 8)
    for size in [(8, 7), (9, 8), (10, 10), (7, 11), (12, 5)]:
        torch.testing.assert_close(traceable_match_size(x, size), match_size(x, size))


def test_swaps_are_undone_after_an_error():
    model = _network("fcdensenet", "scse", "max")
    with pytest.raises(RuntimeError, match="inside"), export_forward(model):
        assert not model.training
        raise RuntimeError("inside")
    assert model.training
    assert all("forward" not in m.__dict__ for m in model.modules())
    from scseg.models import fcdensenet

    assert fcdensenet.match_size is match_size


def test_check_fails_clearly_and_custom_ops_are_refused(tmp_path):
    model = _network("unet", "cse", "add").eval()
    path = export_model(model, tmp_path / "m.onnx", in_channels=2, size=TRACED)
    with torch.no_grad():
        model.classifier.bias += 1.0  # the PyTorch network no longer is the exported one
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* on input \(1, 2, 16, 16\)"):
        check_export(model, path, 2, [(1, 16, 16)])

    node = onnx.helper.make_node("FusedRecalibration", ["x"], ["y"], domain="scseg")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ExportError, match="scseg: FusedRecalibration"):
        check_standard_ops(onnx.helper.make_model(graph), "custom.onnx")


def test_cli_exports_a_run_with_its_input_convention(tiny_config, tmp_path, capsys, monkeypatch):
    run_dir = run_training(tiny_config("fcdensenet", "se=scse", "trainer.max_epochs=1")).run_dir
    out = tmp_path / "export" / "model.onnx"
    assert main([str(run_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx.json" in printed and printed.count("check: batch") == 2

    spec, dm, model, _ = load_run(run_dir)
    convention = json.loads(sidecar_path_for(out).read_text())
    assert convention["model"] == "model.onnx"
    assert convention["classes"] == list(dm.class_names) and convention["num_classes"] == dm.num_classes
    assert convention["canvas"] == list(dm.canvas)
    assert convention["input"]["name"] == "image" and convention["input"]["channels"] == dm.in_channels
    assert convention["input"]["shape"] == ["batch", dm.in_channels, "height", "width"]
    assert convention["input"]["min_size"] == 4  # two poolings
    assert convention["output"]["kind"] == "logits"
    assert convention["normalization"]["mode"] == dm.normalize
    assert convention["slicing"]["axis"] == spec.data["slices"]["axis"]
    assert convention["preprocessing"]["intensity"]["mode"] == dm.settings.intensity.mode
    assert convention["se"] == {"name": "scse", "aggregation": "add", "positions": list(spec.model.positions)}
    assert convention["run"]["checkpoint"] == "best"

    # a real test subject's slices, prepared as predict prepares them, give the same logits in onnxruntime
    slices = dm.eval_slices(dm.subjects("test")[0])
    batch = torch.stack([slices[i]["image"] for i in range(3)])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": batch.numpy()})[0]
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
    assert np.abs(got - expected).max() <= 1e-4

    # bad folders: one line naming the path, exit status 2
    assert main([str(tmp_path), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(tmp_path) in err and "not an scseg run folder" in err
    (run_dir / "checkpoints" / "best.pt").unlink()
    assert main([str(run_dir), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(run_dir / "checkpoints" / "best.pt") in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()

    # without the optional packages: one line saying how to install them
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main([str(run_dir), str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == INSTALL_HINT
