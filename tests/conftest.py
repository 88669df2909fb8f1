"""Test-wide settings: one torch thread (CI has 2 cores; tiny tensors run faster single-threaded)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
