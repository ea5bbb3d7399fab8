"""`python cli.py export`: a checkpoint as a self-contained ONNX or TorchScript file (uint8 images in, probabilities
out, class names in its metadata), checked against the checkpoint in PyTorch."""

import json
import sys

import numpy as np
import onnx
import pytest
import torch

from cli import main
from modules.export import load_exported
from tests.conftest import TINY_MASK


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def export(run, *extra: str):
    return main(["export", *TINY_MASK, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *extra])


@pytest.mark.parametrize("tta", ["none", "flip_translate"])
@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_an_exported_model_takes_uint8_images_and_gives_the_checkpoints_probabilities(tiny_mask_run, fmt, suffix, tta, capsys):
    exported = export(tiny_mask_run, "--format", fmt, "--model.tta", tta)
    path = tiny_mask_run / f"last{suffix}"  # in the checkpoint's run folder, named after it
    assert f"Wrote {path} ({fmt}" in capsys.readouterr().out
    run, facts = load_exported(str(path))
    assert facts["class_names"] == ["mask", "nomask"] and facts["input_shape"] == [3, 32, 32]
    assert facts["project_version"] and facts["interpolation"] == "bilinear" and facts["tta"] == tta
    model, data = exported.model.eval(), exported.datamodule
    for batch in (1, 3):  # any batch size
        images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
        with torch.no_grad():  # predict's: the float conversion and transforms, then the network (and its TTA views)
            expected = model.evaluate(data.transforms(images.float() / 255)).softmax(dim=1).numpy()
        got = run(images.numpy())
        assert got.shape == (batch, 2) and np.abs(got - expected).max() <= 1e-5


def test_onnx_metadata_props_hold_the_class_names_and_output_goes_where_asked(tiny_mask_run, tmp_path):
    export(tiny_mask_run, "--output", str(tmp_path / "models" / "mask.onnx"))
    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "models" / "mask.onnx")).metadata_props}
    assert props["class_names"] == ["mask", "nomask"] and props["input_shape"] == [3, 32, 32]
    graph = onnx.load(str(tmp_path / "models" / "mask.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch size


@pytest.mark.slow  # about 6 s: four runs of the CLI, as many parsers
def test_a_wrong_or_missing_ckpt_path_is_one_line(tiny_mask_run):
    with pytest.raises(SystemExit, match=r"--ckpt_path gone.ckpt does not exist .* or best"):
        main(["export", *TINY_MASK, "--ckpt_path", "gone.ckpt"])
    with pytest.raises(SystemExit, match=r"export needs a trained model: --ckpt_path best .*, last, or the path of a .ckpt"):
        main(["export", *TINY_MASK])
    with pytest.raises(SystemExit, match=r"serve needs a trained model: .* or of a file export wrote"):
        main(["serve", *TINY_MASK])
    with pytest.raises(SystemExit, match=r"--ckpt_path best: no run under lightning_logs/mask/version_\*/checkpoints/"):
        main(["export", *TINY_MASK, "--ckpt_path", "best"])
    with pytest.raises(SystemExit):  # the parser names the choices
        export(tiny_mask_run, "--format", "tflite")
