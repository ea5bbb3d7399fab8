"""A torchvision classification network with ImageNet weights and a new head, for transfer learning."""

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models


class WeightsUnavailableError(RuntimeError):
    """torchvision's pretrained weights are neither cached nor downloadable."""


class TransferNet(nn.Module):
    """``arch`` from torchvision (resnet18, vgg16, ...) with its last Linear layer replaced by ``num_classes`` outputs.

    ``weights`` names torchvision weights ("DEFAULT", "IMAGENET1K_V1"); null trains from scratch.
    ``backbone`` (all but the new head) is what ``BackboneFinetuning`` freezes and later unfreezes.
    """

    def __init__(self, num_classes: int, arch: str = "resnet18", weights: str | None = "DEFAULT") -> None:
        super().__init__()
        if str(weights).lower() in ("none", "null"):  # jsonargparse hands a command-line null over a YAML string as "None"
            weights = None
        self.net = load_torchvision(arch, weights)
        head_parent, head_name = last_linear(self.net)
        old = getattr(head_parent, head_name)
        setattr(head_parent, head_name, nn.Linear(old.in_features, num_classes))
        self._head_at = [head_parent, head_name]  # a plain list: nothing is registered twice in the state dict

    @property
    def head(self) -> nn.Linear:
        parent, name = self._head_at
        return getattr(parent, name)

    @property
    def backbone(self) -> nn.ModuleList:
        """Every layer but the new head: a view, built on each call so no weight is registered twice."""
        parent = self._head_at[0]
        layers = [m for m in self.net.children() if m is not parent and m is not self.head]
        if parent is not self.net:  # VGG: classifier[:6] belongs to the backbone, classifier[6] is the head
            layers += [m for m in parent.children() if m is not self.head]
        return nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def last_linear(net: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the network's final Linear layer, and that layer's attribute name."""
    parent, name = None, None
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            path = module_name.rsplit(".", 1)
            parent, name = (net.get_submodule(path[0]), path[1]) if len(path) == 2 else (net, path[0])
    if parent is None:
        raise ValueError(f"{type(net).__name__} has no Linear layer to replace.")
    return parent, name


def load_torchvision(arch: str, weights: str | None) -> nn.Module:
    if weights is None:
        return models.get_model(arch, weights=None)
    resolved = models.get_model_weights(arch)[weights] if weights != "DEFAULT" else models.get_model_weights(arch).DEFAULT
    try:
        return models.get_model(arch, weights=resolved)
    except OSError as exc:  # URLError and socket errors: no network, no cached file
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(resolved.url).name
        raise WeightsUnavailableError(
            f"cannot download the {arch} weights {resolved} ({exc}). Place the file from {resolved.url} at "
            f"{target} (set TORCH_HOME to move that folder), or train from scratch with "
            "--model.net.init_args.weights null."
        ) from exc
