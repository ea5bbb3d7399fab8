"""Each DataModule reads its real on-disk format into correctly shaped, correctly labelled batches."""

import sys
from pathlib import Path

import kornia.augmentation as K
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.plugins.precision import Precision
from torchvision.transforms import v2

from cli import main
from datamodules import CIFAR10, MNIST, SVHN, DataError, DataNotFoundError, Digits
from tests.conftest import N_TEST, N_TRAIN, label_of

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def first_batch(dm, loader):
    images, labels = next(iter(loader))
    return dm.on_after_batch_transfer((images, labels), 0)


@pytest.mark.parametrize(
    ("cls", "fixture", "stored_shape"),
    [
        (MNIST, "mnist_dir", (1, 28, 28)),
        (CIFAR10, "cifar_pickle_dir", (3, 32, 32)),
        (CIFAR10, "cifar_folder_dir", (3, 32, 32)),
        (SVHN, "svhn_dir", (3, 32, 32)),
    ],
)
def test_batches_are_shaped_and_labelled(cls, fixture, stored_shape, request):
    dm = cls(data_dir=str(request.getfixturevalue(fixture)), batch_size=8, val_split=0.25, download=False)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (N_TRAIN - 10, 10, N_TEST)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = first_batch(dm, loader)
        assert images.shape == (8, *stored_shape) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert [label_of(image) for image in images] == labels.tolist()  # SVHN: its stored 10 reads as 0


def test_validation_split_is_seeded_and_disjoint(mnist_dir):
    def split(seed):
        dm = MNIST(data_dir=str(mnist_dir), val_split=0.25, seed=seed, download=False)
        dm.setup("fit")
        return dm

    a, b, c = split(1), split(1), split(2)
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    # The split only shares out the training file: nothing from the test file, nothing on both sides, nothing left out.
    train, val = a.train_set.index.tolist(), a.val_set.index.tolist()
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(N_TRAIN))


def test_digits_quickstart_holds_out_a_fixed_test_split():
    dm = Digits(batch_size=16, seed=3)
    dm.setup("fit")
    dm.setup("test")
    assert dm.input_shape == (1, 8, 8)
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 1797
    other = Digits(seed=4)
    other.setup("test")
    assert torch.equal(dm.test_set.images, other.test_set.images)  # the training seed never moves the test set


@pytest.mark.parametrize(
    "augment",
    [
        [K.RandomCrop((28, 28)), K.RandomRotation(30.0, p=1.0)],  # batch augmentations: one call per batch
        [v2.RandomCrop(28), v2.RandomRotation(30)],  # torchvision's: one call per image
    ],
    ids=["kornia", "torchvision"],
)
def test_augment_draws_per_image_in_training_only(svhn_dir, augment):
    dm = SVHN(data_dir=str(svhn_dir), batch_size=16, download=False, augment=augment, transforms=[v2.CenterCrop(28)])
    assert dm.input_shape == (3, 28, 28)
    dm.setup("fit")
    batch = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8), torch.zeros(16, dtype=torch.long)

    class Stage:  # stands in for the trainer: augmentation only while training
        training = True
        precision_plugin = Precision()  # 32-true: batches stay float32

    dm.trainer = Stage()
    augmented, _ = dm.on_after_batch_transfer(batch, 0)
    assert augmented.shape == (16, 3, 28, 28)
    assert len({tuple(im.flatten().tolist()) for im in augmented}) > 1  # same input, a different draw per image
    Stage.training = False
    plain, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.all(plain == 200 / 255)


@pytest.mark.parametrize("crop", [K.RandomCrop((28, 28)), v2.RandomCrop(28)], ids=["kornia", "torchvision"])
def test_augment_and_transforms_must_agree_on_size(svhn_dir, crop):
    with pytest.raises(DataError, match="add a crop or resize"):
        SVHN(data_dir=str(svhn_dir), augment=[crop], transforms=[], download=False).setup("fit")  # training only


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (MNIST, "MNIST/raw/train-images-idx3-ubyte"),
        (CIFAR10, "cifar-10-batches-py/data_batch_1"),
        (SVHN, "train_32x32.mat"),
    ],
)
def test_missing_files_are_named(cls, expected, tmp_path):
    dm = cls(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(DataNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert str(tmp_path / "empty") in message and expected in message and "--data.data_dir" in message


@pytest.mark.parametrize(
    ("cls", "fixture", "damaged"),
    [
        (MNIST, "mnist_dir", "MNIST/raw/train-images-idx3-ubyte"),
        (CIFAR10, "cifar_pickle_dir", "cifar-10-batches-py/data_batch_1"),
        (SVHN, "svhn_dir", "train_32x32.mat"),
    ],
)
def test_damaged_files_are_named_with_how_to_get_them_again(cls, fixture, damaged, request):
    data_dir = request.getfixturevalue(fixture)
    file = data_dir / damaged
    file.write_bytes(file.read_bytes()[:100])  # a download cut short
    with pytest.raises(DataError) as error:
        cls(data_dir=str(data_dir), download=False).setup("fit")
    message = str(error.value)
    assert message.startswith(f"{cls.task}: cannot read its train data in {data_dir} (") and str(file) in message
    assert "damaged or incomplete" in message and "--data.download true" in message


@pytest.mark.parametrize(("name", "how"), [("mnist.tar.gz", "extract it, then point --data.data_dir at the folder it makes"),
                                           ("notes.txt", "point --data.data_dir at the folder that holds the data")])
def test_data_dir_that_is_a_file_says_so_and_downloads_nothing(name, how, tmp_path, monkeypatch):
    downloads = []
    monkeypatch.setattr(MNIST, "download_files", lambda self: downloads.append(self))
    (tmp_path / name).write_bytes(b"\x1f\x8b")
    with pytest.raises(DataNotFoundError) as error:
        MNIST(data_dir=str(tmp_path / name), download=True).prepare_data()
    assert str(error.value) == f"mnist: data_dir {tmp_path / name} is a file, not a folder: {how}." and downloads == []


def test_failed_download_is_reported_with_the_missing_files(tmp_path, monkeypatch):
    def offline(self):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(MNIST, "download_files", offline)
    with pytest.raises(DataNotFoundError, match="(?s)t10k-labels.*Downloading failed: Temporary failure"):
        MNIST(data_dir=str(tmp_path), download=True).prepare_data()


def test_out_of_range_labels_are_refused(svhn_dir):
    import scipy.io

    mat = scipy.io.loadmat(svhn_dir / "train_32x32.mat")
    mat["y"][0] = 11
    scipy.io.savemat(svhn_dir / "train_32x32.mat", {"X": mat["X"], "y": mat["y"]})
    with pytest.raises(DataError, match="labels span 0..11, expected 0..9"):
        SVHN(data_dir=str(svhn_dir), download=False).setup("fit")


def test_cifar_folder_with_a_missing_class_names_it(cifar_folder_dir: Path):
    (cifar_folder_dir / "train" / "truck").rename(cifar_folder_dir / "train" / "lorry")
    with pytest.raises(DataNotFoundError, match="train/truck"):
        CIFAR10(data_dir=str(cifar_folder_dir), download=False).setup("fit")


def test_cifar_folder_layout_a_level_off_names_the_folder_that_holds_it(cifar_folder_dir: Path):
    for wrong in (cifar_folder_dir.parent, cifar_folder_dir / "train"):  # above the unpacked copy, or inside it
        with pytest.raises(DataNotFoundError, match=f"but {cifar_folder_dir} holds every file it needs: use --data.data_dir"):
            CIFAR10(data_dir=str(wrong), download=False).setup("fit")
    elsewhere = cifar_folder_dir.parent / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DataNotFoundError, match=r"(?s)cifar-10-batches-py/data_batch_1.*or as image folders train/<class>/"):
        CIFAR10(data_dir=str(elsewhere), download=False).setup("fit")  # nowhere near: both layouts named


def test_cifar_folder_with_an_extra_class_is_refused(cifar_folder_dir: Path):
    (cifar_folder_dir / "train" / "zebra").mkdir()
    a_cat = next((cifar_folder_dir / "train" / "cat").iterdir())
    a_cat.rename(cifar_folder_dir / "train" / "zebra" / a_cat.name)
    with pytest.raises(DataError, match=r"classes \['zebra'\] are not among the expected classes"):
        CIFAR10(data_dir=str(cifar_folder_dir), download=False).setup("fit")


def test_undecodable_image_is_named(cifar_folder_dir: Path):
    bad = cifar_folder_dir / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not an image PIL can read"):
        CIFAR10(data_dir=str(cifar_folder_dir), download=False).setup("fit")


def test_val_split_must_leave_training_images():
    with pytest.raises(DataError, match=r"val_split=5000 takes all 1438 training images for validation\. Leave some"):
        Digits(val_split=5000).setup("fit")


@pytest.mark.parametrize(
    ("config", "option", "value"),
    [
        ("digits", "val_split", "1.5"),  # neither a fraction below 1 nor a whole number of images
        ("digits", "val_split", "0"),
        ("digits", "batch_size", "0"),
        ("digits", "batch_size", "-3"),
        ("digits", "num_workers", "-1"),
        ("mask", "image_size", "0"),
        ("mask", "on_bad_image", "ignore"),
    ],
)
def test_the_parser_refuses_impossible_settings_and_names_them(config, option, value, capsys, monkeypatch):
    """The limits are types in the signatures (PositiveInt, OpenUnitInterval...): the parser checks them before
    anything is built, and ``--help`` shows them."""
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), f"--data.{option}", value])
    refused = capsys.readouterr().err
    assert f'Parser key "{option}"' in refused and value in refused


def test_val_split_is_a_fraction_or_a_whole_number_of_images_and_keeps_its_value_through_the_parser():
    """LightningCLI builds a DataModule's hparams, and the run's config.yaml, from the parser's dump of its settings:
    a fraction must come back the same (in a union with PositiveInt first, jsonargparse would dump 0.25 as 0)."""
    parser = ArgumentParser()
    parser.add_class_arguments(Digits)
    for value in ("0.25", "100"):
        parsed = parser.parse_args(["--val_split", value])
        assert parsed.val_split == yaml.safe_load(parser.dump(parsed))["val_split"] == float(value)


@pytest.mark.parametrize(("batch_size", "batches"), [(3, 431), (32, 41)])  # 1,294 training images: 431 x 3 + 1
def test_training_never_ends_an_epoch_on_a_batch_of_one_image(batch_size, batches):
    """BatchNorm cannot train on one image ("Expected more than 1 value per channel"): such a batch is left out."""
    data = Digits(batch_size=batch_size)
    data.setup("fit")
    sizes = [len(labels) for _, labels in data.train_dataloader()]
    assert len(sizes) == batches and min(sizes) > 1


def test_out_of_range_idx_labels_are_refused(mnist_dir):
    from tests.conftest import write_idx
    import numpy as np

    labels = np.full(40, 3, dtype=np.uint8)
    labels[7] = 12
    write_idx(mnist_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=r"mnist train data in .*labels span 3..12, expected 0..9"):
        MNIST(data_dir=str(mnist_dir), download=False).setup("fit")
