"""What can be wrong with a task's files on disk, said with the fix: files missing (named, with where to get them),
a data_dir that is a file or a level off the data (with the folder to use), a file no reader can take."""

from pathlib import Path

from datamodules.errors import DataError, DataNotFoundError

ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2")


def found_nearby(data_dir: Path, layouts: list[list[Path]]) -> Path | None:
    """For a data_dir that exists but lacks the files: a folder up to 3 above it, or one inside it, that holds every
    file of one of ``layouts`` (paths relative to a data_dir). The usual slip is pointing at the dataset's own folder
    (``MNIST/``, ``cifar-10-batches-py/``, a folder set's ``train/``) instead of the one that holds it."""
    if not layouts or not data_dir.is_dir():
        return None
    inside = sorted(p for p in data_dir.iterdir() if p.is_dir())
    holds = lambda folder: any(all((folder / p).exists() for p in layout) for layout in layouts)  # noqa: E731
    return next((folder for folder in [*data_dir.resolve().parents[:3], *inside] if holds(folder)), None)


def refuse_a_misplaced_data_dir(task: str, data_dir: Path, layouts: list[list[Path]]) -> None:
    """A data_dir that is a file (most often the downloaded archive itself), or one that misses the files by a
    level: said as such, and before any download, which would put a second copy in the wrong place."""
    if data_dir.is_file():
        if data_dir.name.lower().endswith(ARCHIVES):
            how = "extract it, then point --data.data_dir at the folder it makes"
        else:
            how = "point --data.data_dir at the folder that holds the data"
        raise DataNotFoundError(f"{task}: data_dir {data_dir} is a file, not a folder: {how}.")
    if (found := found_nearby(data_dir, layouts)) is not None:
        raise DataNotFoundError(
            f"{task}: data not found in {data_dir.resolve()}, but {found} holds every file it needs: "
            f"use --data.data_dir {found}"
        )


def refuse_missing_files(
    task: str, data_dir: Path, missing: list[Path], layouts: list[list[Path]], source: str, download_error: Exception | None
) -> None:
    """Files ``load`` needs that are not there: a misplaced data_dir said as such, else every missing file named,
    with why a download failed and where to get the data."""
    if not missing:
        return
    refuse_a_misplaced_data_dir(task, data_dir, layouts)
    listing = "\n".join(f"  {path}" for path in missing)
    why = f"\nDownloading failed: {download_error}" if download_error else ""
    where = f"\nGet the data from {source}" if source else ""
    raise DataNotFoundError(
        f"{task}: data not found in {data_dir.resolve()}. Missing:\n{listing}{why}{where}\n"
        "Put the files there, or point to them with --data.data_dir PATH."
    )


def unreadable(task: str, split: str, data_dir: Path, files: list[Path], source: str, error: Exception) -> DataError:
    """A file no reader can take (a download cut short, another format): the task's files and how to get them
    again, in place of the reader's own error."""
    listing = "\n  ".join(str(path) for path in files)
    where = f" from {source}" if source else ""
    return DataError(
        f"{task}: cannot read its {split} data in {data_dir} ({type(error).__name__}: {error}). A file is "
        f"damaged or incomplete (a download cut short?). Its files:\n  {listing}\nDelete the damaged one and run "
        f"again with --data.download true, or get it again{where}."
    )
