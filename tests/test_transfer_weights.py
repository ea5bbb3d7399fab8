"""Weights for a transfer network from a local file, in each format and for both libraries; and the one-line message
for a file that does not fit, a path that is not there, a name neither library has, and a download that fails."""

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision

from cli import main
from modules.nets import TransferNet, WeightsUnavailableError
from tests.offline import offline  # noqa: F401 (an autouse fixture: no test touches the network)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SAVERS = {".safetensors": safetensors.torch.save_file, ".pth": torch.save, ".bin": torch.save}


def network(arch: str, **kwargs) -> torch.nn.Module:
    """A freshly built network of either library, with its own 1000-class head: what a weights file holds."""
    return timm.create_model(arch, **kwargs) if timm.is_model(arch) and arch != "resnet18" else torchvision.models.get_model(arch, **kwargs)


def write(net: torch.nn.Module, path: Path) -> Path:
    SAVERS[path.suffix]({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


@pytest.mark.parametrize(("arch", "suffix"), [("test_efficientnet", ".safetensors"), ("test_efficientnet", ".pth"),
                                              ("test_efficientnet", ".bin"), ("resnet18", ".safetensors")])
def test_a_weights_file_loads_in_each_format(arch, suffix, tmp_path):
    saved = network(arch)
    net = TransferNet(2, arch, weights=str(write(saved, tmp_path / f"weights{suffix}")))
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, saved.state_dict()[key]), key
    assert net.head.out_features == 2  # the data's classes: a new head, where the file's has 1000


def test_a_head_for_the_same_classes_is_kept(tmp_path):
    saved = timm.create_model("test_efficientnet", num_classes=2)  # e.g. a network fine-tuned on this task before
    net = TransferNet(2, "test_efficientnet", weights=str(write(saved, tmp_path / "mine.pth")))
    assert torch.equal(net.head.weight, saved.classifier.weight)


def fit(data_dir, *extra) -> None:
    main(["fit", "--config", str(CONFIGS / "catdog.yaml"), "--data.data_dir", str(data_dir), "--data.image_size", "32",
          "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true", *extra])


WRONG_NAMES = [  # what was given, and what the one line names: the closest of the right names
    ({"arch": "resnet19"}, ["--model.net.init_args.arch resnet19: not a timm or torchvision network (closest: resnet18"]),
    ({"weights": "IMAGENET1K_V9"}, ["weights IMAGENET1K_V9: not a file path, null, or a name of torchvision's resnet18 "
                                    "weights (closest: IMAGENET1K_V1)"]),
    ({"weights": "nowhere/resnet18.safetensors"}, ["--model.net.init_args.weights nowhere/resnet18.safetensors: no such file"]),
    ({"arch": "test_efficientnet", "weights": "WRONG"}, ["does not fit test_efficientnet: missing conv_stem.weight",
                                                         "unexpected conv1.0.weight", "--model.net.init_args.arch"]),
]
MORE_NAMES = [  # the same, built directly (quicker than the whole CLI, which the four above go through)
    ({"weights": "FOLDER/resnet18.pth"}, ["resnet18.pth: no such file (closest: ", "weights.safetensors"]),
    ({"arch": "test_efficientnet", "library": "torchvision"}, ["arch test_efficientnet: not a torchvision network"]),
    ({"arch": "test_efficientnet", "weights": "r160_in2k"}, ["weights r160_in2k: not", "timm's test_efficientnet weights "
                                                             "(closest: r160_in1k)"]),
    ({"arch": "test_efficientnet"}, ["cannot download timm's weights for test_efficientnet (URLError", "no network in tests",
                                     "--model.net.init_args.weights PATH", "--model.net.init_args.weights null"]),
]


def given(arguments: dict, tmp_path: Path) -> dict:
    """The settings, with WRONG as a file of another architecture and FOLDER as the folder it is in."""
    wrong = write(network("resnet10t"), tmp_path / "weights.safetensors")
    return {key: str(wrong) if value == "WRONG" else value.replace("FOLDER", str(tmp_path)) for key, value in arguments.items()}


@pytest.mark.parametrize(("arguments", "named"), WRONG_NAMES)
def test_weights_or_a_name_that_cannot_be_had_get_one_line(arguments, named, catdog_filtered_dir, tmp_path):
    options = [item for key, value in given(arguments, tmp_path).items() for item in (f"--model.net.init_args.{key}", value)]
    with pytest.raises(SystemExit) as error:
        fit(catdog_filtered_dir, *options)
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message  # one line: no traceback, no dump of the model
    for part in named:
        assert part in message, (part, message)


@pytest.mark.parametrize(("arguments", "named"), MORE_NAMES)
def test_more_names_that_cannot_be_had(arguments, named, tmp_path):
    with pytest.raises(WeightsUnavailableError) as error:
        TransferNet(2, **given(arguments, tmp_path))
    for part in named:
        assert part in str(error.value) and "\n" not in str(error.value), (part, str(error.value))
