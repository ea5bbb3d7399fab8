"""Folder datasets: the face masks, Food-11, cats vs dogs, any folder, and predict on a folder of photos."""

import csv
import hashlib
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image

from cli import main
from datamodules import CatsDogs, DataError, FaceMask, Food11, ImageFolder
from datamodules.image_folder import label_images
from datamodules.split import grouped_split
from tests.conftest import MASK_GOOD, label_of_folder_image, save_image

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = ["--data.image_size", "32", "--data.augment", "[]", "--data.batch_size", "4", "--trainer.accelerator", "cpu"]


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])


def cli(task: str, subcommand: str, *extra: str):
    args = [subcommand, "--config", str(CONFIGS / f"{task}.yaml"), "--trainer.log_every_n_steps", "1", *SMALL]
    args += ["--data.cache_dir", "cache"]  # inside the test's folder
    return main(args + list(extra))


def mask_module(mask_dir, **kwargs) -> FaceMask:
    return FaceMask(data_dir=str(mask_dir), train_dir="image", image_size=32, val_split=0.25, **kwargs)


def test_folder_reads_every_mode_and_ignores_junk(mask_dir, recwarn):
    dm = mask_module(mask_dir)
    assert dm.class_names == ["mask", "nomask"]
    dm.setup("fit")
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert torch.bincount(labels).tolist() == [MASK_GOOD["mask"], MASK_GOOD["nomask"]]
    images = torch.cat([dm.train_set.images, dm.val_set.images])
    assert images.shape[1:] == (3, 32, 32)  # grayscale, RGBA, CMYK, palette: all RGB, all one size
    read_back = torch.tensor([label_of_folder_image(image.float() / 255) for image in images])
    assert (read_back != labels).sum() == 1  # only nomask/across.jpg, a byte copy of a mask image


def test_identical_files_land_on_one_side_of_the_split(mask_dir):
    dm = mask_module(mask_dir)
    dm.setup("fit")
    keys = dm.file_keys(len(dm.train_set) + len(dm.val_set))
    m0 = hashlib.sha1((mask_dir / "image" / "mask" / "m0.jpg").read_bytes()).hexdigest()
    assert keys.count(m0) == 4  # the split groups by file content: m0.jpg and its three copies
    labels = torch.tensor([0] * MASK_GOOD["mask"] + [1] * MASK_GOOD["nomask"])
    for seed in range(20):
        train, val = grouped_split(labels, keys, 0.25, seed)
        sides = {key: set() for key in keys}
        for index in train.tolist():
            sides[keys[index]].add("train")
        for index in val.tolist():
            sides[keys[index]].add("val")
        assert all(len(side) == 1 for side in sides.values())


def test_images_without_keys_split_as_one_group_each():
    """keys=None (the in-memory sets) takes a vectorised path: the very same split as one distinct key per image."""
    labels = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(0))
    for val_split, seed in ((0.1, 42), (0.5, 0), (7, 3)):
        train, val = grouped_split(labels, None, val_split, seed)
        keyed_train, keyed_val = grouped_split(labels, [str(i) for i in range(len(labels))], val_split, seed)
        assert torch.equal(train, keyed_train) and torch.equal(val, keyed_val)
        assert len(val) == (round(3000 * val_split) if val_split < 1 else val_split)
        assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(3000))


def test_split_is_stratified_and_seeded(mask_dir):
    a, b = mask_module(mask_dir, seed=5), mask_module(mask_dir, seed=5)
    a.setup("fit")
    b.setup("fit")
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert set(a.val_set.labels.tolist()) == {0, 1}  # both classes are validated
    skewed = torch.tensor([0] * 90 + [1] * 10)  # each class gives its share, whatever the draw
    for seed in range(5):
        _, val = grouped_split(skewed, None, 0.2, seed)
        assert skewed[val].bincount().tolist() == [18, 2]


def test_validation_comes_in_a_mixed_order_so_its_first_batches_hold_every_class(mask_dir, catdog_filtered_dir):
    """Folders list their images class by class: validation limited to its first batches (limit_val_batches) saw one."""
    drawn = FaceMask(data_dir=str(mask_dir), train_dir="image", image_size=32, val_split=0.5, batch_size=4)
    shipped = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="validation", image_size=32, batch_size=2, seed=1)
    for data in (drawn, shipped):
        data.setup("fit")
        first = next(iter(data.val_dataloader()))[1]
        assert set(first.tolist()) == {0, 1}
    assert sorted(drawn.val_set.index.tolist()) == grouped_split(  # the same images as the split drew, reordered
        drawn.train_set.all_labels, drawn.file_keys(0), 0.5, 42)[1].tolist()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is a text file named .jpg", "not an image PIL can read"),
        ("truncated", "corrupt or truncated image"),
    ],
)
def test_unreadable_files_are_skipped_and_named_or_fail(mask_dir, content, reason):
    bad = mask_dir / "image" / "mask" / "bad.jpg"
    if content == "truncated":
        full = save_image(mask_dir / "big.jpg", 0, size=200).read_bytes()
        content = full[: len(full) // 3]
    bad.write_bytes(content)
    with pytest.warns(UserWarning, match=rf"(?s)Skipped 1 unreadable image file\(s\).*bad.jpg: {reason}"):
        mask_module(mask_dir).setup("fit")
    with pytest.raises(DataError, match=rf"bad.jpg: {reason}"):
        mask_module(mask_dir, on_bad_image="fail").setup("fit")


def test_decompression_bomb_is_refused(mask_dir, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    save_image(mask_dir / "image" / "mask" / "bomb.png", 0, size=60)
    with pytest.raises(DataError, match="bomb.png: too large to decode safely"):
        mask_module(mask_dir, on_bad_image="fail").setup("fit")


def test_empty_class_folder_and_empty_data_folder_are_named(mask_dir, tmp_path):
    (mask_dir / "image" / "unsure").mkdir()
    with pytest.raises(DataError, match="unsure: class folder holds no images"):
        mask_module(mask_dir)
    (tmp_path / "nothing" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files found"):
        ImageFolder(data_dir=str(tmp_path / "nothing"))



def test_a_single_class_is_refused_with_the_layout_to_use(mask_dir):
    shutil.rmtree(mask_dir / "image" / "nomask")
    with pytest.raises(DataError, match=r"image: images of 1 class \(mask\) found; a classifier needs at least 2. Put each class's"):
        mask_module(mask_dir)
    with pytest.raises(DataError, match=r"classes=\['mask'\]: a classifier needs at least 2 class names"):
        mask_module(mask_dir, classes=["mask"])

def test_split_folders_are_relative_to_data_dir_or_absolute_or_from_home(mask_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "held out").symlink_to(mask_dir / "image")
    for test_dir in ("image", str(tmp_path / "held out"), "~/held out"):
        dm = mask_module(mask_dir, test_dir=test_dir)
        dm.setup("test")
        assert len(dm.test_set) == sum(MASK_GOOD.values())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty/image"):  # named as missing, not searched for next to a test_dir elsewhere
        FaceMask(data_dir=str(tmp_path / "empty"), train_dir="image", test_dir=str(tmp_path / "held out"), classes=["a", "b"]).setup("fit")


def test_food11_labels_come_from_file_names_in_natural_order(food11_dir):
    dm = Food11(data_dir=str(food11_dir), train_dir="training", val_dir="validation", filename_pattern=r"^(\d+)_", image_size=32)
    assert dm.class_names == [str(i) for i in range(11)]  # 2 before 10
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (33, 11)
    for image, label in zip(dm.val_set.images, dm.val_set.labels):
        assert label_of_folder_image(image.float() / 255) == label  # 3_0.jpg is class "3"
    dm.setup("test")
    assert dm.test_set is dm.val_set  # the test folder has no labels
    assert dm.predict_folder() == food11_dir / "test"
    (food11_dir / "test").rename(food11_dir / "evaluation")
    assert dm.predict_folder() == food11_dir / "evaluation"


def test_catdog_reads_the_filtered_and_the_kaggle_layouts(catdog_filtered_dir, catdog_kaggle_dir, caplog):
    filtered = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="validation", filename_pattern=r"^(cat|dog)\.", image_size=32)
    filtered.setup("fit")
    assert filtered.class_names == ["cats", "dogs"] and (len(filtered.train_set), len(filtered.val_set)) == (12, 4)
    assert "no validation folder" not in caplog.text
    kaggle = CatsDogs(data_dir=str(catdog_kaggle_dir), val_dir="validation", filename_pattern=r"^(cat|dog)\.", val_split=4, image_size=32)
    kaggle.setup("fit")
    # Said, so that a misspelt val_dir is not silently replaced by a split of the training images.
    assert (f"catdog: no validation folder {catdog_kaggle_dir / 'validation'}; validation is drawn from the training "
            "images (val_split 4, seed 42).") in caplog.text
    assert kaggle.class_names == ["cat", "dog"] and (len(kaggle.train_set), len(kaggle.val_set)) == (8, 4)
    for image, label in zip(kaggle.val_set.images, kaggle.val_set.labels):
        assert label_of_folder_image(image.float() / 255) == label


@pytest.mark.slow
def test_mask_task_end_to_end_and_predict_any_folder(mask_dir, tmp_path, capsys):
    data = ["--data.data_dir", str(mask_dir)]
    cli("mask", "fit", *data, "--trainer.max_epochs", "1", "--model.net.width", "0.25")
    cli("mask", "validate", *data, "--ckpt_path", "best")
    tested = cli("mask", "test", *data, "--ckpt_path", "best")  # no test folder: the validation split
    assert "test/acc" in tested.trainer.callback_metrics
    # A labelled folder of its own needs no training folder: the class names come from the checkpoint.
    elsewhere = cli("mask", "test", "--data.data_dir", str(tmp_path / "gone"), "--data.test_dir", str(mask_dir / "image"),
                    "--ckpt_path", "best")
    assert len(elsewhere.datamodule.test_set) == sum(MASK_GOOD.values()) and "test/acc" in elsewhere.trainer.callback_metrics
    with pytest.raises(SystemExit, match=r"drawn from its 26 training images \(val_split 0.1, seed 42: 2 images\); this run draws 13"):
        cli("mask", "test", *data, "--ckpt_path", "best", "--data.val_split", "0.5")  # a test on images it trained on
    photos = tmp_path / "my photos"
    save_image(photos / "a.jpg", 0)
    save_image(photos / "holiday" / "B.PNG", 1, mode="RGBA")
    (photos / "readme.txt").write_text("skip me")
    # No training data needed: the class names come from the checkpoint. MobileNet pools globally, so it also takes
    # images of another size than it was trained on (48 here, 32 in training).
    csv_path = tmp_path / "out" / "mine.csv"
    predicted = cli("mask", "predict", "--data.data_dir", str(tmp_path / "gone"), "--data.predict_dir", str(photos),
                    "--ckpt_path", "last", "--predictions.output", str(csv_path), "--data.image_size", "48")
    picture = Path(predicted.trainer.log_dir) / "predictions.png"  # in the run folder, wherever the CSV goes
    out = capsys.readouterr().out
    assert f"Wrote 2 predictions to {csv_path}" in out and f"The first 2, with their predicted classes: {picture}" in out
    assert ("was trained on images of shape (3, 32, 32); this run gives it (3, 48, 48) (channels, height, width). To use "
            "the size it was trained on: --data.image_size 32.") in out  # allowed, and said
    assert Image.open(picture).size[0] == 8 + 2 * (3 * 48 + 8)  # both photos side by side, each pixel shown 3x3
    rows = list(csv.DictReader(csv_path.open()))
    assert [Path(r["image"]).name for r in rows] == ["a.jpg", "B.PNG"]
    assert all(r["predicted"] in ("mask", "nomask") and 0.5 <= float(r["probability"]) <= 1 for r in rows)
    one = cli("mask", "predict", "--data.predict_dir", str(photos / "a.jpg"), "--ckpt_path", "last", "--data.image_size", "48")
    out = capsys.readouterr().out
    assert "Wrote 1 prediction to " in out and "The image, with its predicted class: " in out
    assert list(csv.DictReader((Path(one.trainer.log_dir) / "predictions.csv").open())) == rows[:1]  # one image file
    with pytest.raises(SystemExit, match=r"gone.jpg: no such folder or file. Point --data.predict_dir at a folder"):
        cli("mask", "predict", "--data.predict_dir", str(photos / "gone.jpg"), "--ckpt_path", "last")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "empty.jpg").write_bytes(b"")
    (junk / "notes.png").write_text("not an image")
    with pytest.raises(SystemExit, match=r"none of its 2 image files could be read:\n  .*empty.jpg: empty file"):
        cli("mask", "predict", "--data.predict_dir", str(junk), "--ckpt_path", "last")


@pytest.mark.slow
def test_a_fit_whose_test_after_it_is_refused_keeps_its_run_folder(mask_dir, tmp_path):
    other = tmp_path / "other"
    save_image(other / "bird" / "b.jpg", 1)  # a class the run did not train on: refused as the test sets up
    with pytest.raises(SystemExit, match=r"classes \['bird'\] are not among the expected classes"):
        cli("mask", "fit", "--data.data_dir", str(mask_dir), "--trainer.max_epochs", "1", "--trainer.enable_checkpointing",
            "false", "--test_after_fit", "true", "--data.test_dir", str(other))
    assert list(Path("lightning_logs/mask/version_0").glob("events.out.tfevents.*"))  # the trained epoch's logs stay


@pytest.mark.slow
def test_food11_predict_writes_the_kaggle_csv(food11_dir, capsys):
    data = ["--data.data_dir", str(food11_dir)]
    cli("food11", "fit", *data, "--trainer.max_epochs", "1", "--model.net.image_size", "32")
    cli("food11", "test", *data, "--ckpt_path", "best", "--model.net.image_size", "32")
    predicted = cli("food11", "predict", *data, "--ckpt_path", "best")
    lines = (Path(predicted.trainer.log_dir) / "predictions.csv").read_text().splitlines()
    assert lines[0] == "Id,Category" and len(lines) == 1 + 7
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(7)]
    assert all(line.split(",")[1] in [str(c) for c in range(11)] for line in lines[1:])
    (food11_dir / "test" / "0002.jpg").write_bytes(b"")  # an unreadable test image shifts no other image's Id
    with pytest.warns(UserWarning, match="0002.jpg: empty file"):
        predicted = cli("food11", "predict", *data, "--ckpt_path", "best")
    again = (Path(predicted.trainer.log_dir) / "predictions.csv").read_text().splitlines()
    assert again == lines[:3] + lines[4:]
    assert "The submission has no row for Id 2: those test images could not be read" in capsys.readouterr().out


def test_split_folder_without_one_readable_image_is_named(catdog_filtered_dir):
    for image in (catdog_filtered_dir / "validation").rglob("*.jpg"):
        image.write_bytes(b"")
    data = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="validation", image_size=32)
    with pytest.raises(DataError, match=r"catdog validation data in .*: no images \(unreadable files, if any, are listed"):
        with pytest.warns(UserWarning, match="empty file"):
            data.setup("fit")

@pytest.mark.slow
def test_checkpoint_from_other_classes_is_refused(mask_dir, catdog_filtered_dir):
    cli("mask", "fit", "--data.data_dir", str(mask_dir), "--trainer.max_epochs", "1", "--model.net.width", "0.25")
    ckpt = "lightning_logs/mask/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit, match=r"train: classes \['cats', 'dogs'\] are not among the expected classes \['mask', 'nomask'\]"):
        cli("mask", "test", "--data.data_dir", str(catdog_filtered_dir), "--data.train_dir", "train", "--ckpt_path", ckpt)


def test_unreadable_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="broken.ckpt: not a readable checkpoint"):
        cli("mask", "predict", "--data.predict_dir", str(tmp_path), "--ckpt_path", str(bad))


def test_checkpoint_that_validated_on_its_own_folder_is_not_judged_on_its_training_images(catdog_filtered_dir):
    trained = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="validation", image_size=32)
    trained.setup("fit")
    state = trained.state_dict()  # as its checkpoint keeps it
    validating = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.VALIDATING))
    drawn = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="nosuch", val_split=4, image_size=32)
    drawn.trainer = validating
    drawn.setup("validate")
    with pytest.raises(DataError, match=r"the checkpoint trained on all of its training images .* this run draws 4 "
                       r"validation images from the 12 training images .* Give the validation folder with --data.val_dir"):
        drawn.load_state_dict(state)
    same = CatsDogs(data_dir=str(catdog_filtered_dir), val_dir="validation", image_size=32)
    same.trainer = validating
    same.setup("validate")
    same.load_state_dict(state)  # its own validation folder again: nothing to refuse


def test_symlinked_class_folders_and_subfolders_are_read_and_a_link_loop_ends(tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "data" / "train"
    save_image(elsewhere / "dogs" / "dog.0.jpg", 1)
    save_image(elsewhere / "more_cats" / "cat.9.jpg", 0)
    save_image(root / "cats" / "cat.0.jpg", 0)
    (root / "dogs").symlink_to(elsewhere / "dogs", target_is_directory=True)  # a class folder linked in
    (root / "cats" / "extra").symlink_to(elsewhere / "more_cats", target_is_directory=True)  # a subfolder linked in
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)  # a link back up the tree
    paths, classes = label_images(root, None)
    assert [(p.relative_to(root).as_posix(), c) for p, c in zip(paths, classes)] == [
        ("cats/cat.0.jpg", "cats"), ("cats/extra/cat.9.jpg", "cats"), ("dogs/dog.0.jpg", "dogs")]


def test_an_augment_that_crops_to_another_size_than_the_images_is_refused_in_training_with_the_size_to_give(mask_dir):
    from kornia.augmentation import RandomResizedCrop

    with pytest.raises(DataError, match=r"augment turns mask images into \(3, 40, 40\) but evaluation images are \(3, 32, 32\): "
                       r"give augment's crop or resize the evaluation size, 32x32 \(in the config's data.augment"):
        mask_module(mask_dir, augment=[RandomResizedCrop(size=(40, 40))]).setup("fit")
    assert mask_module(mask_dir, augment=[RandomResizedCrop(size=(32, 32))]).input_shape == (3, 32, 32)
    tested = mask_module(mask_dir, augment=[RandomResizedCrop(size=(40, 40))])  # augment runs in training only:
    tested.setup("test")  # another image size for a test (a task config's training crop) is no reason to refuse it
    assert tested.input_shape == (3, 32, 32) and len(tested.test_set) > 0


def test_exif_rotation_is_applied(tmp_path):
    from PIL import Image as PILImage

    from datamodules.image_folder import load_image

    wide = PILImage.new("RGB", (40, 20), (200, 10, 10))
    exif = wide.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° to display upright
    path = tmp_path / "phone.jpg"
    wide.save(path, exif=exif)
    decoded = load_image(path.read_bytes(), path, "RGB", size=None)
    assert tuple(decoded.shape) == (3, 40, 20)  # stored 40 wide, 20 high; shown 20 wide, 40 high


def test_images_outside_class_folders_are_named(mask_dir):
    save_image(mask_dir / "image" / "stray.jpg", 0)
    with pytest.raises(DataError, match=r"1 image lies directly in the folder \(e.g. stray.jpg\) instead of in class folders"):
        mask_module(mask_dir)
