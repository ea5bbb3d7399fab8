"""The plain PyTorch loop exactly as the course notebooks write it, to measure the project against.

Per-sample PIL transforms in a DataLoader, fp32, the full training set, test accuracy after every epoch.
It lives here only: the project itself never hand-writes a training loop.

    python benchmarks/course_loop.py --task cifar10 --data-dir PATH --epochs 10
"""

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from modules.nets import CIFAR10Net, SmallCNN

COURSE = {  # dataset, transform, network, optimizer, batch size: as in the course notebooks
    "mnist": dict(
        data=lambda root, train, tf: datasets.MNIST(root, train=train, transform=tf),
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]),
        net=lambda: SmallCNN(10, channels=(16, 32)),  # the network configs/mnist.yaml trains
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        batch_size=64,
    ),
    "cifar10": dict(
        data=lambda root, train, tf: datasets.ImageFolder(f"{root}/{'train' if train else 'test'}", transform=tf),
        transform=transforms.ToTensor(),
        net=lambda: CIFAR10Net(10),
        optimizer=lambda params: torch.optim.SGD(params, lr=1e-2),
        batch_size=64,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=COURSE, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    recipe = COURSE[args.task]
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    train_data = recipe["data"](args.data_dir, True, recipe["transform"])
    test_data = recipe["data"](args.data_dir, False, recipe["transform"])
    train_loader = DataLoader(train_data, batch_size=recipe["batch_size"], shuffle=True)
    test_loader = DataLoader(test_data, batch_size=recipe["batch_size"])
    model = recipe["net"]()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = recipe["optimizer"](model.parameters())

    history = []
    for epoch in range(args.epochs):
        model.train()
        epoch_start = time.perf_counter()
        for images, targets in train_loader:
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_s = time.perf_counter() - epoch_start
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, targets in test_loader:
                correct += (model(images).argmax(1) == targets).sum().item()
        accuracy = correct / len(test_data)
        elapsed = time.perf_counter() - start
        history.append({"epoch": epoch + 1, "test_acc": accuracy, "elapsed_s": round(elapsed, 2), "train_s": round(train_s, 2)})
        print(json.dumps(history[-1]), flush=True)
    best = max(history, key=lambda h: h["test_acc"])
    print(json.dumps({"task": args.task, "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                      "final_test_acc": history[-1]["test_acc"], "wall_s": history[-1]["elapsed_s"]}))


if __name__ == "__main__":
    main()
