"""Thin command-line entry points, one per pipeline stage: ``python -m stages.<name>``.

Importing this package, before torch loads, pins what makes CPU results machine-dependent, so
that a stage gives the same bytes on any x86-64 machine and under either engine (the committed
``digits`` run): the SIMD kernels ATen, oneDNN and MKL pick (AVX2, which every such machine has;
a variable already set wins) and the thread count, since a float sum splits across threads.
The count is ``$REPURIFY_THREADS`` (default 2), whatever the engine sets ``OMP_NUM_THREADS`` to.
On a GPU, cuBLAS's deterministic workspace is set here too, before any stage's first kernel.
"""

import os

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
DEFAULT_THREADS = "2"

for _key, _value in PINS.items():
    os.environ.setdefault(_key, _value)
os.environ["OMP_NUM_THREADS"] = os.environ.get("REPURIFY_THREADS", DEFAULT_THREADS)
