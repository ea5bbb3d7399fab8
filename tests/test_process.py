"""The settings every run makes for its whole process (modules/process.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modules import process
from modules.process import keep_freed_memory, skip_absent_nvml

FREE_AND_ALLOCATE = """
import resource, sys
if sys.argv[1] == "keep":
    from modules.process import keep_freed_memory
    keep_freed_memory()
block = bytearray(20 * 2**20)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what a training step does with its activations: allocate, free, again
    a, b = bytearray(20 * 2**20), bytearray(20 * 2**20)
    del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    run = subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE, mode], capture_output=True, text=True, check=True,
                         env={**environment, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return int(run.stdout.split()[-1])


@pytest.mark.slow
def test_freed_memory_is_kept_for_reuse_unless_the_user_tunes_malloc(monkeypatch):
    default = faults("default")
    assert default > 5 * 5000  # glibc trims freed blocks off the heap: their pages fault in again (5,000 per 20 MiB)
    assert faults("keep") < default / 5
    # The user's own malloc settings win: the C library is not even opened.
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: pytest.fail(f"opened {name}"))
    keep_freed_memory()


def test_without_the_nvidia_driver_optimizer_steps_stop_trying_to_load_it(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning sets it
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    loads = []

    def absent(name, *args, **kwargs):
        loads.append(name)
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(process.ctypes, "CDLL", absent)  # torch imports CDLL from ctypes when it checks
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters())

    def step():
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    step()
    if torch.backends.cuda.is_built() and not torch.cuda.is_initialized():  # a CUDA build asks NVML at every step
        assert loads == ["libnvidia-ml.so.1"]
    skip_absent_nvml()
    loads.clear()
    step()
    step()
    assert loads == []
    # Where the driver's library loads, the check stays NVML-based: forked DataLoader workers keep a usable GPU.
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: object())
    skip_absent_nvml()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
