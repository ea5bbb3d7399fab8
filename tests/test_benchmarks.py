"""The benchmark scripts still run against the code they measure, on tiny data (their figures are not checked here:
speed is measured by running them, see README)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import airbench_speed, augment, compare, folder_cache


def test_augment_benchmark_builds_each_config_both_ways_with_the_same_output(monkeypatch, capsys):
    for task, torchvision_augment in augment.TORCHVISION.items():
        shapes = set()
        for chosen in (torchvision_augment, None):  # None: the config's own (kornia) augmentation
            dm, (images, labels) = augment.datamodule(task, chosen, "cpu")
            out, _ = dm.on_after_batch_transfer((images[:4], labels[:4]), 0)
            shapes.add(tuple(out.shape[1:]))
        assert shapes == {dm.input_shape}, task  # (a) and (b) feed the network the same size
    monkeypatch.setattr(augment, "REPEATS", 1)
    monkeypatch.setattr(sys, "argv", ["augment.py"])
    augment.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[0] in augment.TORCHVISION]
    assert len(rows) == 4 and all(float(row[-1]) > 0 for row in rows)


def test_folder_cache_benchmark_builds_the_cache_then_maps_it(catdog_filtered_dir, tmp_path, monkeypatch):
    import datamodules.image_folder as reader

    decoded, original = [], reader.read_images
    monkeypatch.setattr(reader, "read_images", lambda paths, *a, **k: decoded.append(len(paths)) or original(paths, *a, **k))
    cache = tmp_path / "cache"
    first = folder_cache.one_run(str(catdog_filtered_dir), str(cache), 32)
    assert decoded == [12, 4]  # the training and validation folders, decoded into the cache
    later = folder_cache.one_run(str(catdog_filtered_dir), str(cache), 32)
    assert decoded == [12, 4]  # the second run maps them: nothing decoded again
    assert len(list(cache.rglob("*.npy"))) == 2 and all(seconds > 0 for seconds in (*first, *later))


@pytest.mark.filterwarnings("ignore:The number of training batches")  # 9 steps an epoch, fewer than the log interval
def test_overhead_benchmark_times_every_step_but_each_epochs_last(mnist_dir, tmp_path):
    recipe = {**compare.mnist_recipe(), "batch_size": 4}  # 36 training images: 9 steps an epoch
    for as_configured in (False, True):
        result = compare.overhead(str(mnist_dir), recipe, tmp_path / "logs", as_configured, epochs=2)
        assert [steps for _, _, steps in result["per_epoch"]] == [8, 8]
        assert all(light > 0 and own > 0 for light, own, _ in result["per_epoch"])
    assert compare.held_mib(str(mnist_dir), recipe) * 2**20 >= (36 + 4 + 20) * 28 * 28


def test_lightning_code_benchmark_times_lightning_and_the_hand_step():
    light, hand = compare.lightning_code(steps=2 * compare.WARMUP)
    assert light > 0 and hand > 0


def test_peak_rss_runs_the_script_as_main_and_reports_its_peak(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nblock = bytearray(200 * 2**20)\ndel block\nprint('ran', sys.argv[1:], __name__)\n")
    wrapper = Path(compare.__file__).with_name("peak_rss.py")
    out = subprocess.run([sys.executable, str(wrapper), str(script), "--flag", "1"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "ran ['--flag', '1'] __main__"
    assert json.loads(lines[-1])["peak_rss_kib"] >= 200 * 1024  # the freed 200 MiB block still counts: a peak


@pytest.mark.slow
def test_export_parity_compares_both_formats_with_the_checkpoint_over_the_test_split(tiny_mask_run, tmp_path, monkeypatch, capsys):
    from benchmarks import export_parity
    from tests.conftest import TINY_MASK

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["export_parity.py"])
    data = tiny_mask_run.parents[2] / "face_mask"
    code = export_parity.main([*TINY_MASK, "--ckpt_path", str(tiny_mask_run / "checkpoints" / "last.ckpt"),
                               "--data.data_dir", str(data), "--latency-images", "2"])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.split()}
    assert code == 0 and rows["pytorch"][:2] == ["100.0000%", "0.00e+00"]
    assert all(rows[name][0] == "100.0000%" and float(rows[name][1]) <= 1e-5 for name in ("onnx", "torchscript"))
    assert export_parity.main([*TINY_MASK, "--ckpt_path", str(tiny_mask_run / "checkpoints" / "last.ckpt"),
                               "--data.data_dir", str(data), "--latency-images", "2", "--max-difference", "-1"]) == 1


@pytest.mark.slow  # about 30 s: two short fits with their tests, each in a process of its own
def test_strong_benchmark_times_a_run_and_reads_its_test_accuracy_and_time_to_target(tmp_path, capsys):
    from benchmarks import strong

    config = str(Path(strong.__file__).parents[1] / "configs" / "digits.yaml")
    fit = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5", "--logs", str(tmp_path)]
    assert strong.main(["--config", config, "--target", "0.0", *fit]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("digits.yaml: test accuracy ") and "min end to end" in lines[0]
    assert "first reached 0.00% after epoch 0" in lines[1]
    assert strong.main(["--config", config, "--target", "1.01", *fit]) == 0  # a target never reached is said so
    assert capsys.readouterr().out.splitlines()[1] == "validation accuracy never reached 101.00%"


def test_airbench_speed_prints_a_rate_its_flops_and_the_epochs_a_budget_affords(capsys):
    airbench_speed.main(["--seconds", "0.01", "--batch_size", "4", "--widths", "half", "--precision", "32-true",
                         "bf16-mixed", "--budget_minutes", "45"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("half")]
    assert [row[1:3] for row in rows] == [["32-true", "no"], ["bf16-mixed", "no"]]
    for *_, rate, gflops, epochs in rows:
        assert 0.15 < float(gflops) / float(rate) < 0.25  # (32, 128, 128): 33 MMACs forward, three passes a step
        assert float(epochs) == pytest.approx(float(rate) * 45 * 60 / 49_000, abs=0.1)
