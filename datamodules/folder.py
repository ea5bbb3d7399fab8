"""Any dataset that is a folder of image files: the face masks, Food-11, cats vs dogs, or your own."""

from pathlib import Path
from typing import Literal

from jsonargparse.typing import PositiveInt
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from datamodules.base import ImageClassificationDataModule
from datamodules.errors import DataError
from datamodules.image_folder import OnBadImage, label_images, natural_key, read_labelled_folder, report_skipped
from datamodules.preprocessing import CropFraction, Interpolation, Resize, resolve


class ImageFolder(ImageClassificationDataModule):
    """``data_dir/<train_dir>/<class>/<image>`` (any depth), or flat folders whose file names carry the
    class (``filename_pattern``, a regex whose first group is the class). Images are decoded once, upright
    by EXIF, in RGB (or grayscale with ``channels: 1``), shorter side resized to ``image_size / crop_pct`` with
    ``interpolation``, then the centre ``image_size`` square cut out. Null for any of the three: what the
    pretrained weights expect (``pretrained``, from the network), else 224, 1 (the whole shorter side), bilinear.

    Validation: ``val_dir`` when that folder exists, else ``val_split`` of the training images, stratified,
    with identical files kept on one side. Test: ``test_dir`` if set, else the validation split.
    Unreadable files (corrupt, truncated, empty, too large to decode safely) are skipped and listed
    (``on_bad_image: skip``) or stop the run (``fail``). ``classes`` pins the class names and their order;
    by default they are the training folder's, in natural order (2 before 10).
    ``cache_dir``: keep the decoded images there as memory-mapped files, so later runs skip decoding and
    sets larger than memory train from disk pages (rebuilt when a file, the file list or the size changes).
    """

    task = "folder"

    def __init__(
        self,
        data_dir: str = "data",
        train_dir: str = "train",
        val_dir: str | None = None,
        test_dir: str | None = None,
        image_size: PositiveInt | None = None,
        crop_pct: CropFraction | None = None,
        interpolation: Interpolation | None = None,
        channels: Literal[1, 3] = 3,
        filename_pattern: str | None = None,
        classes: list[str] | None = None,
        on_bad_image: OnBadImage = "skip",
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        decoding = {"image_size": image_size, "crop_pct": crop_pct, "interpolation": interpolation}
        self.preprocessing, self.preprocessing_sources = resolve(decoding, kwargs.get("pretrained"))
        size = self.preprocessing["image_size"]
        self.image_shape = (channels, size, size)
        self.resize = Resize(self.preprocessing["crop_pct"], self.preprocessing["interpolation"])
        super().__init__(data_dir=data_dir, **kwargs)

        def root(folder: str | None) -> Path | None:  # relative to data_dir, or a path of its own (absolute, or from ~)
            return self.data_dir / Path(folder).expanduser() if folder else None

        self.roots = {"train": root(train_dir) or self.data_dir, "val": root(val_dir), "test": root(test_dir)}
        self.filename_pattern, self.on_bad_image = filename_pattern, on_bad_image
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        if classes is None:
            self._check_files()
            _, names = label_images(self.roots["train"], filename_pattern)
            found = sorted(set(names), key=natural_key)
            if len(found) < 2:
                layout = f"file names matching {filename_pattern!r}" if filename_pattern else "a subfolder per class"
                raise DataError(
                    f"{self.roots['train']}: images of {len(found)} class ({', '.join(found)}) found; a classifier needs "
                    f"at least 2. Put each class's images in {layout} there, or point data_dir/train_dir at such a folder."
                )
            classes = found
        elif len(classes) < 2:
            raise DataError(f"classes={list(classes)}: a classifier needs at least 2 class names.")
        self.class_names = list(classes)
        self._file_hashes: list[str] = []

    def prepare_data(self) -> None:
        """Also fills the disk cache: Lightning calls this on one process per machine before every process's
        ``setup``, which then maps the cache. Under DDP each process would otherwise decode the whole set."""
        super().prepare_data()
        if self.cache_dir is None or self.predicting_a_folder():
            return
        for split in ["test"] if self.on_test_folder_only() else ["train", "val"]:
            if self.roots[split] is not None and self.roots[split].is_dir():
                self._decode(self.roots[split])

    def on_test_folder_only(self) -> bool:
        """test or predict with a test_dir: that folder is all they read (the class names come from the checkpoint)."""
        stage = self.trainer.state.fn if self.trainer is not None else None
        return stage in ("test", "predict") and self.roots["test"] is not None

    def expected_files(self) -> list[Path]:
        if self.on_test_folder_only():
            return [self.roots["test"]]
        return [root for split, root in self.roots.items() if root is not None and split != "val"]

    def _decode(self, root: Path) -> tuple[Tensor, Tensor, list[str], list[str]]:
        return read_labelled_folder(root, self.class_names, self.image_shape, self.filename_pattern, self.resize,
                                    on_bad_image=self.on_bad_image, cache_dir=self.cache_dir)

    def _read(self, split: str) -> tuple[Tensor, Tensor]:
        root = self.roots[split]
        images, labels, hashes, problems = self._decode(root)
        report_skipped(problems, root)
        if split == "train":
            self._file_hashes = hashes
            empty = [name for i, name in enumerate(self.class_names) if not (labels == i).any()]
            if empty:
                raise DataError(f"{root}: no readable training images for classes {empty}.")
        return images, labels

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        return self._read(split) if self.roots[split] is not None else None

    def load_validation(self) -> tuple[Tensor, Tensor] | None:
        folder = self.roots["val"]
        if folder is not None and folder.is_dir():
            return self._read("val")
        if folder is not None:  # a layout without one (Kaggle's flat cats vs dogs), or a misspelt val_dir
            rank_zero_info(f"{self.task}: no validation folder {folder}; validation is drawn from the training images "
                           f"(val_split {self.hparams.val_split}, seed {self.hparams.seed}).")
        return None

    def file_keys(self, n: int) -> list[str]:
        return self._file_hashes
