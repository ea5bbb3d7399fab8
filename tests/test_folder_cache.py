"""The decoded-image cache of folder datasets: built once, shared by runs and DDP processes, never left half written."""

import pytest
import torch

from datamodules import DataError, FaceMask
from tests.conftest import save_image
from tests.runs import run_in_tmp  # noqa: F401 (a fixture)
from tests.test_folders import mask_module

pytestmark = pytest.mark.usefixtures("run_in_tmp")

def test_disk_cache_is_built_once_reused_and_rebuilt_on_change(mask_dir, tmp_path, monkeypatch):
    import datamodules.image_folder as reader

    cache = tmp_path / "cache"
    (mask_dir / "image" / "mask" / "bad.jpg").write_bytes(b"")
    first = mask_module(mask_dir, cache_dir=str(cache))
    with pytest.warns(UserWarning, match="bad.jpg: empty file"):
        first.setup("fit")
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1

    decoded = []
    original = reader.read_images
    monkeypatch.setattr(reader, "read_images", lambda *a, **k: decoded.append(1) or original(*a, **k))
    again = mask_module(mask_dir, cache_dir=str(cache))
    with pytest.warns(UserWarning, match="bad.jpg: empty file"):  # the skip report survives the cache
        again.setup("fit")
    assert decoded == []  # mapped from disk, nothing decoded
    assert torch.equal(again.train_set.images, first.train_set.images)
    assert torch.equal(again.val_set.labels, first.val_set.labels)
    with pytest.raises(DataError, match="bad.jpg: empty file"):  # 'fail' stops at it, cached or not
        mask_module(mask_dir, cache_dir=str(cache), on_bad_image="fail").setup("fit")

    save_image(mask_dir / "image" / "mask" / "m3.jpg", 0, size=50)  # a file changed
    changed = mask_module(mask_dir, cache_dir=str(cache))
    with pytest.warns(UserWarning):
        changed.setup("fit")
    assert decoded == [1] and len(list(cache.glob("*.npy"))) == 1  # rebuilt, the stale copy removed

    resized = FaceMask(data_dir=str(mask_dir), train_dir="image", image_size=16, cache_dir=str(cache))
    with pytest.warns(UserWarning):
        resized.setup("fit")
    assert decoded == [1, 1] and resized.train_set.images.shape[1:] == (3, 16, 16)


def test_cache_is_filled_by_prepare_data_so_every_ddp_process_only_maps_it(mask_dir, tmp_path, monkeypatch):
    import datamodules.image_folder as reader

    cache = tmp_path / "cache"
    mask_module(mask_dir, cache_dir=str(cache)).prepare_data()  # Lightning: one process per machine
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.partial*"))
    decoded = []
    original = reader.read_images
    monkeypatch.setattr(reader, "read_images", lambda *a, **k: decoded.append(1) or original(*a, **k))
    for _ in range(2):  # then every process's setup
        mask_module(mask_dir, cache_dir=str(cache)).setup("fit")
    assert decoded == []


def test_two_runs_building_one_cache_at_once_decode_it_once(mask_dir, tmp_path, monkeypatch):
    import threading
    import time

    import datamodules.image_folder as reader

    decoded = []
    original = reader.read_images

    def slow_read(*args, **kwargs):  # a build long enough for the second run to arrive in the middle of it
        decoded.append(1)
        time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(reader, "read_images", slow_read)
    runs = [mask_module(mask_dir, cache_dir=str(tmp_path / "cache")) for _ in range(2)]
    threads = [threading.Thread(target=run.setup, args=("fit",)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert decoded == [1]  # the second waited for the first's build, then mapped it
    assert torch.equal(runs[0].train_set.images, runs[1].train_set.images)


def test_cache_that_cannot_be_written_is_named_and_leaves_no_partial_file(mask_dir, tmp_path, monkeypatch):
    import errno

    import datamodules.image_folder as reader

    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"image cache in .*a_file/cache: .*Not a directory.*--data.cache_dir"):
        mask_module(mask_dir, cache_dir=str(tmp_path / "a_file" / "cache")).setup("fit")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reader, "read_images", disk_full)
    with pytest.raises(DataError, match=r"No space left on device\. Choose a writable --data.cache_dir with room"):
        mask_module(mask_dir, cache_dir=str(tmp_path / "cache")).setup("fit")
    assert not list((tmp_path / "cache").glob("*.partial"))  # the half-built cache gave its space back


def test_a_build_cut_short_leaves_no_partial_file_and_the_next_build_clears_what_a_killed_one_left(mask_dir, tmp_path, monkeypatch):
    from filelock import FileLock

    import datamodules.image_folder as reader

    cache, original = tmp_path / "cache", reader.read_images

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reader, "read_images", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        mask_module(mask_dir, cache_dir=str(cache)).setup("fit")
    assert not list(cache.glob("*.partial"))  # the half-built cache gave its space back
    monkeypatch.setattr(reader, "read_images", original)
    mask_module(mask_dir, cache_dir=str(cache)).setup("fit")
    folder = next(cache.glob("*.npy")).name.split("-")[0]
    # A build SIGKILLed earlier, for other files; another run's build of another image size, in progress.
    (cache / f"{folder}-0000000000killed.npy.partial").write_bytes(bytes(1000))
    (cache / f"{folder}-00000000building.npy.partial").write_bytes(bytes(1000))
    with FileLock(cache / f"{folder}-00000000building.lock"):
        save_image(mask_dir / "image" / "mask" / "m3.jpg", 0, size=50)  # a file changed: a new build
        mask_module(mask_dir, cache_dir=str(cache)).setup("fit")
    left = sorted(p.name.removeprefix(f"{folder}-") for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert len(left) == 3 and left[0] == "00000000building.npy.partial"  # and the new build's .npy and .json
