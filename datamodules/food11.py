"""Food-11 (ML course HW3): ``training/``, ``validation/`` and an unlabelled ``test/`` (``evaluation/`` in older copies)."""

from pathlib import Path

from datamodules.folder import ImageFolder


class Food11(ImageFolder):
    """Labels are the number before ``_`` in each file name (``3_127.jpg`` is class 3). The test folder has
    no labels: ``test`` evaluates on the validation folder, and ``predict`` reads the test folder."""

    task = "food11"
    source = "the Food-11 dataset (Kaggle: ml2021spring-hw3), unpacked so training/, validation/, test/ sit in data_dir"

    def default_predict_dir(self) -> Path | None:
        for name in ("test", "evaluation"):
            if (self.data_dir / name).is_dir():
                return self.data_dir / name
        return None
