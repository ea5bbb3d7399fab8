"""Plain ``nn.Module`` networks; each takes ``num_classes`` first, which the ClassifierModule supplies."""

from modules.nets.airbench import AirbenchNet
from modules.nets.cifar10_net import CIFAR10Net
from modules.nets.food11_cnn import Food11CNN
from modules.nets.mlp import MLP
from modules.nets.mobilenet_v1 import MobileNetV1
from modules.nets.small_cnn import SmallCNN
from modules.nets.svhn_resnet import SVHNResNet
from modules.nets.svhn_vgg import SVHNVGG
from modules.nets.transfer import TransferNet, WeightsUnavailableError, pretrained_preprocessing

__all__ = ["AirbenchNet", "CIFAR10Net", "Food11CNN", "MLP", "MobileNetV1", "SVHNResNet", "SVHNVGG", "SmallCNN", "TransferNet", "WeightsUnavailableError",
           "pretrained_preprocessing"]
