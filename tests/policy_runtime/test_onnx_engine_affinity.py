"""The ONNX Runtime engine's CPUs (policy.cpus): the thread that runs the backbone and head pins itself there, so
inference stays off the fast loop's core; the chunk is the one an unpinned engine gives; CPUs the process may not
use are refused in one line."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from anchorvla.errors import UserError
from onboard.config import Config
from onboard.devices import build_engine
from policy_runtime.engines.onnx_engine import OnnxEngine, intra_op_affinities
from tests.bundle_helpers import tiny_bundle
from tests.policy_runtime.test_onnx_engine import _observation


def test_pool_threads_get_onnxruntime_one_based_processor_lists():
    assert intra_op_affinities([1], 1) == ""
    assert intra_op_affinities([0, 2], 3) == "1,3;1,3"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning shows only with two CPUs or more")
def test_the_inference_thread_pins_itself_and_the_chunk_is_unchanged():
    _checkpoint, bundle = tiny_bundle()
    cpu = max(os.sched_getaffinity(0))
    pinned = OnnxEngine(bundle, precision="fp32", threads=2, seed=3, cpus=[cpu])
    free = OnnxEngine(bundle, precision="fp32", threads=1, seed=3)
    seen = {}

    def infer():  # the slow loop's worker thread; the test's own thread stays unpinned
        seen["before"] = os.sched_getaffinity(0)
        seen["chunk"] = pinned.infer(_observation())
        seen["after"] = os.sched_getaffinity(0)

    worker = threading.Thread(target=infer)
    worker.start()
    worker.join()
    assert seen["after"] == {cpu} and seen["before"] == os.sched_getaffinity(0)
    np.testing.assert_allclose(seen["chunk"].actions, free.infer(_observation()).actions, atol=1e-5)


def test_cpus_the_process_may_not_use_are_refused():
    _checkpoint, bundle = tiny_bundle()
    with pytest.raises(UserError, match=r"policy.cpus \[4096\]: this process may run on CPUs"):
        OnnxEngine(bundle, precision="fp32", cpus=[4096])


def test_build_engine_takes_the_cpus_from_the_config_and_one_thread_per_cpu():
    _checkpoint, bundle = tiny_bundle()
    cpu = max(os.sched_getaffinity(0))
    config = Config.model_validate(
        {"policy": {"engine": "onnxruntime", "bundle": str(bundle), "cpus": [cpu]}}
    )
    engine = build_engine(config)
    assert isinstance(engine, OnnxEngine)
    options = engine.sessions["backbone"].get_session_options()
    assert options.intra_op_num_threads == 1  # threads 0 with one CPU: one thread
    worker = threading.Thread(target=engine.warmup)
    worker.start()
    worker.join()
    assert engine.pinned_threads == {worker.ident}
