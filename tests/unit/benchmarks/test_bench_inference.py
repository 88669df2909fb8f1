"""The figures of benchmarks/bench_inference.py against timings with a known answer."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location(
    "bench_inference", Path(__file__).resolve().parents[3] / "benchmarks" / "bench_inference.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_figures_are_per_image_percentiles_and_throughput_over_all_calls():
    seconds = [0.010, 0.020, 0.030, 0.040, 0.100]  # five calls of batch 10
    f = bench.figures(seconds, batch=10)
    assert f["p50_ms"] == pytest.approx(3.0)  # 30 ms per call / 10 images
    assert f["p95_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 10], 95))
    assert f["images_per_s"] == pytest.approx(50 / 0.2)


def test_timed_calls_alternate_the_engines_and_skip_the_warmup():
    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def logits(self, x):
            calls.append(self.name)

    times = bench.timed_calls({"a": Fake("a"), "b": Fake("b")}, np.zeros(1), calls=4, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times.values()] == [4, 4]
