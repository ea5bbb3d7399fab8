"""Settings a run makes for its whole process, before any training (``tune_the_process``); measured side by side by
benchmarks/process_tuning.py. And what its terminal shows of the libraries (``quiet_the_libraries``)."""

import ctypes
import ctypes.util
import logging
import os
import warnings
from functools import partial
from typing import Callable


def keep_freed_memory() -> None:
    """Let glibc keep the memory a training step frees for the next step, instead of returning it to the OS.

    By default glibc gives large blocks back on free and trims the heap's top, so every CPU step faults its
    activations in again: 0.19-1.06 million page faults in a 2-epoch MNIST run, a different count each run (the
    worst cost a fifth of an epoch's speed), against 0.19 million with fixed thresholds, at the same peak memory.
    Skipped where glibc is not the C library, or where the user tunes malloc through the environment."""
    if any(name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library by that name (Windows: no name at all)
        return
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol: other C libraries lack or ignore mallopt
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # blocks below 32 MiB (glibc's maximum) come from the reusable heap
    libc.mallopt(m_trim_threshold, 256 * 2**20)  # and the heap keeps up to 256 MiB free at its top


def skip_absent_nvml(library: str = "libnvidia-ml.so.1") -> None:
    """Where the NVIDIA driver's NVML ``library`` is not installed, let ``torch.cuda.is_available()`` skip it.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import, so that the check asks NVML instead of initialising
    CUDA in a process that forks DataLoader workers. Without the driver each check (Adam makes one every step) tries
    to load NVML, fails and asks CUDA anyway: 0.1-0.4 ms a CPU step, up to 2% of a small CNN's on MNIST. With no
    driver there is no CUDA to initialise, so nothing a fork could inherit."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL(library)
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def tune_the_process() -> None:
    """What every run sets for its whole process (cli.py's main; benchmarks/compare.py for the runs it makes in its
    own)."""
    keep_freed_memory()
    skip_absent_nvml()


def format_warning(message, category, filename, lineno, line=None, *, library_format: Callable,
                   message_only: tuple[type[Warning], ...]) -> str:
    """The project's own warnings (the data's) as their message alone: the file and line of the code that warned tell a
    user nothing. Others as the libraries format them (``library_format``)."""
    if issubclass(category, message_only):
        return f"Warning: {message}\n"
    return library_format(message, category, filename, lineno, line)


def not_an_advert(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip")  # Lightning 2.6 advertises its cloud logger at every start


def quiet_the_libraries(library_filters: list, library_format: Callable, message_only: tuple[type[Warning], ...]) -> None:
    """What a run's terminal shows: the run's own output, not the libraries' noise around it (each call the same).
    ``library_filters`` and ``library_format``: the warning settings torch and Lightning made as cli.py imported them."""
    for action, message, category, module, lineno in reversed(library_filters):  # as the libraries set them
        warnings.filterwarnings(action, getattr(message, "pattern", ""), category, getattr(module, "pattern", ""), lineno)
    # Raised inside Lightning 2.6's own pytree helper under torch >= 2.10, once per run; nothing here can change it.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.formatwarning = partial(format_warning, library_format=library_format, message_only=message_only)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(not_an_advert)
