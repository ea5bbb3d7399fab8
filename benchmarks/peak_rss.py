"""Run a Python script as ``__main__`` and print its peak resident memory before the interpreter tears down.

    python benchmarks/peak_rss.py SCRIPT [ARGS ...]

The max RSS the OS reports for a whole process also counts its exit: there CPython's finalisation and the C++
destructors of PyTorch's libraries fault in 70-120 MiB of library code pages, a different amount each run
(measured here on the memory baselines: 900-905 MiB when the work ends, 953-1,007 MiB at exit). The peak
read in the last ``atexit`` handler is the peak of the work itself: every step, checkpoint, log and test.
"""

import atexit
import json
import resource
import runpy
import sys


def report() -> None:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_kib": kib}), flush=True)  # the line compare.py reads


if __name__ == "__main__":
    atexit.register(report)  # registered first, so it runs after every handler the script registers
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
