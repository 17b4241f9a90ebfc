"""compress / decompress on a runner: the file is the runner-less one byte for byte, and decodes.

The Ray tests start a local cluster of 2 CPUs themselves (one module-scoped ``ray.init``, as in
``tests/test_runners.py``) and run 2 workers on the tiny model; they are skipped where Ray is
not installed (and fail under CI=true).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechlin.compression import coder as coder_module
from mechlin.compression import compress, decompress, read_header
from mechlin.errors import ArgumentError, DecodingMismatchError
from mechlin.runners import Item, LocalRunner, RayRunner

from .test_tokens import HARD

DATA = b"".join(HARD[1:8])  # every kind of input, ~380 tokens: 8 chunks, the last one short
OPTIONS = dict(window=16, batch_size=3, progress=False)


def test_local_runner_writes_the_same_file_and_decodes_it(tiny) -> None:
    plain = compress(tiny, DATA, **OPTIONS)
    header = read_header(plain)
    assert -(-header.n_tokens // 16) > 4 * 3  # more than four chunks
    blob = compress(tiny, DATA, runner=LocalRunner(), **OPTIONS)
    assert blob == plain
    assert decompress(tiny, blob, runner=LocalRunner(), progress=False) == DATA
    assert compress(tiny, b"", runner=LocalRunner(), **OPTIONS) == compress(tiny, b"", **OPTIONS)


def test_workers_decode_with_the_recorded_thread_count(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blob = compress(tiny, HARD[6] * 3, window=16, batch_size=2, progress=False)
    finally:
        torch.set_num_threads(old)
    seen: set[int] = set()
    real = coder_module._Steps.probabilities

    def spy(self: object, fed: np.ndarray) -> np.ndarray:
        seen.add(torch.get_num_threads())
        return real(self, fed)  # type: ignore[arg-type]

    monkeypatch.setattr(coder_module._Steps, "probabilities", spy)
    torch.set_num_threads(2)  # the runner's process runs with another count
    try:
        got = decompress(tiny, blob, runner=LocalRunner(), progress=False)
        assert torch.get_num_threads() == 2  # restored after each chunk
    finally:
        torch.set_num_threads(old)
    assert got == HARD[6] * 3
    assert seen == {1}


class _Elsewhere:
    """A runner whose workers report another CPU (as a worker on another machine would)."""

    def map(self, model: Any, work: Any, items: Sequence[Item], **kw: Any) -> Mapping[str, Any]:
        got = LocalRunner().map(model, work, items, **kw)
        return {
            k: dict(got[k], environment=got[k]["environment"].replace("cpu:", "cpu:OTHER-"))
            for k in got
        }


def test_a_worker_in_another_environment_is_refused(tiny) -> None:
    with pytest.raises(ArgumentError, match=r"device: here 'cpu:\w+', there 'cpu:OTHER-"):
        compress(tiny, DATA, runner=_Elsewhere(), **OPTIONS)


def test_a_worker_that_decodes_differently_raises(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = compress(tiny, DATA, **OPTIONS)
    real = coder_module._Steps.probabilities

    def noisy(self: object, fed: np.ndarray) -> np.ndarray:
        p = real(self, fed)  # type: ignore[arg-type]
        return np.nextafter(p, np.float32(1.0)).astype(np.float32)  # one ulp up

    monkeypatch.setattr(coder_module._Steps, "probabilities", noisy)
    with pytest.raises(DecodingMismatchError):
        decompress(tiny, blob, runner=LocalRunner(), progress=False)


# --- Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    if os.environ.get("CI"):  # CI installs the extra (scripts/setup.sh): a missing Ray fails
        import ray
    else:
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mechlin[ray]'")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the file records it; the workers compute with it
    root = str(Path(__file__).resolve().parents[2])  # workers import mechlin from this tree
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_runner(ray_cluster):
    with RayRunner(num_workers=2, chunk_size=1) as runner:
        yield runner


def test_ray_workers_write_the_same_file_and_decode_it(ray_runner, tiny) -> None:
    plain = compress(tiny, DATA, **OPTIONS)
    spread = compress(tiny, DATA, runner=ray_runner, **OPTIONS)
    assert spread == plain
    assert len(ray_runner.workers) == 2
    assert decompress(tiny, spread, runner=ray_runner, progress=False) == DATA
    # one window per chunk: more items than workers, each decoded wherever it lands
    blob = compress(tiny, DATA, window=16, batch_size=1, progress=False)
    assert decompress(tiny, blob, runner=ray_runner, progress=False) == DATA
