"""Every engine called from several threads at once gives each input, bit for bit, its answer alone; an engine
whose runtime is not thread-safe is run one call at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facelab.deploy import TorchEngine, export_onnx, load_engine
from tests.unit.deploy.test_onnx import SIZE, images, save_tiny

THREADS = 4


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("threads")
    ckpt, other = save_tiny(root / "a", "vgg_scratch", seed=0), save_tiny(root / "b", "vgg_scratch", seed=1)
    export_onnx(ckpt, root / "a.onnx", exporter="torchscript")
    return {"torch": load_engine(ckpt), "onnx": load_engine(root / "a.onnx", threads=2),
            "ensemble": load_engine([ckpt, other]), "tta": load_engine(ckpt, tta_flip=True)}


@pytest.mark.parametrize("name", ["torch", "onnx", "ensemble", "tta"])
def test_threads_get_the_logits_each_batch_gets_alone(engines, name):
    engine = engines[name]
    batches = [engine.preprocessing.to_input(images(n, SIZE, seed=s)) for s, n in enumerate((1, 3, 2, 5, 4, 1))]
    alone = [engine.logits(x).tobytes() for x in batches]
    jobs = [i for k in range(THREADS * 2) for i in np.random.default_rng(k).permutation(len(batches))]
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda i: engine.logits(batches[i]).tobytes(), jobs))
    assert [i for i, g in zip(jobs, got) if g != alone[i]] == []


def test_an_engine_that_is_not_thread_safe_runs_one_call_at_a_time(engines):
    base = engines["torch"]

    class OneAtATime(TorchEngine):
        thread_safe = False
        running = overlaps = 0

        def forward(self, x):
            type(self).running += 1
            type(self).overlaps += type(self).running > 1
            time.sleep(0.005)
            out = super().forward(x)
            type(self).running -= 1
            return out

    engine = OneAtATime(base.model, base.meta)
    x = base.preprocessing.to_input(images(2, SIZE))
    start = threading.Barrier(THREADS)

    def work(_: int) -> bytes:
        start.wait()
        return engine.logits(x).tobytes()

    with ThreadPoolExecutor(THREADS) as pool:
        answers = set(pool.map(work, range(THREADS)))
    assert OneAtATime.overlaps == 0 and answers == {base.logits(x).tobytes()}
