"""Test-wide settings: one torch thread (CI has 2 cores; tiny tensors run faster single-threaded); a process of
a distributed test that waits for another for two minutes fails (a deadlock would otherwise hold CI for the
process group's 30-minute timeout)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)

from datetime import timedelta  # noqa: E402

from facelab.train import distributed  # noqa: E402

distributed.DEFAULT_TIMEOUT = timedelta(minutes=2)  # forked test processes inherit it
