"""Where the per-item work of a dataset-level analysis runs: here, or on the workers of Ray.

An analysis that sweeps a dataset splits it into ``Item``s (a key, a payload, a size for the
progress bar) and a module-level function ``work(model, payload) -> record`` that computes one
item. It hands both to a runner, ``runner.map(model, work, items, store=store)``, and gets the
records back by key; it never knows which runner it has.

- ``LocalRunner`` (the default, ``runner=None``) runs every item in this process with the model
  already loaded.
- ``RayRunner(num_workers=..., gpus_per_worker=..., address=...)`` starts Ray actors that each
  load the model once, by themselves, from a ``ModelSource`` (a bundled name, a directory, a
  zero-argument load function; by default the one ``mechlin.load_model`` recorded on the model
  as ``model.mechlin_source``), and sends them chunks of items. Ray is imported only here.

With a store (an analysis' ``out=``), every writer, local or a worker on a shared filesystem,
claims an item in the store before computing it and saves it atomically (``mechlin._store``):
an item already there is never computed again, an interrupted run resumes, and the items of a
worker that died are handed to a replacement (its claims are removed by the driver, which
knows the worker is gone). Each item's record depends only on its payload and the model (seeds
are per item, never per process), so a distributed run gives the records of a single-process
run: bit for bit on CPU (tested); on GPUs as far as the kernels are deterministic.

Pitfalls: a work function must be importable by the workers (module level, in mechlin or an
installed package), and so must its payloads. The workers' model must be the driver's: each
worker compares ``model_fingerprint`` of what it loaded with the driver's model and refuses to
run on other weights (a model changed in memory after loading cannot be shipped by name).
"""

from __future__ import annotations

import os
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from tqdm.auto import tqdm

from mechlin._store import ItemStore, model_fingerprint
from mechlin._types import Model
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    MechlinError,
    MissingExtraError,
    NotInResultError,
)

Work = Callable[[Any, Any], Any]  # work(model, payload) -> record, defined at module level
RAY_INSTALL = "pip install 'mechlin[ray]'"


@dataclass(frozen=True)
class Item:
    """One unit of work: its key in the store, what ``work`` gets, its share of the bar."""

    key: str
    payload: Any
    size: int = 1  # progress units (facts, tokens, ...)


@runtime_checkable
class Runner(Protocol):
    """What an analysis asks of a runner (``LocalRunner``, ``RayRunner``)."""

    def map(
        self,
        model: Model,
        work: Work,
        items: Sequence[Item],
        *,
        store: ItemStore | None = None,
        progress: bool = True,
        desc: str = "",
        unit: str = "item",
    ) -> Mapping[str, Any]: ...


class Records(Mapping[str, Any]):
    """The records of a ``map`` by key: in memory, or read from the store when used."""

    def __init__(
        self, keys: Sequence[str], memory: dict[str, Any], store: ItemStore | None
    ) -> None:
        self._keys = list(keys)
        self._memory = memory
        self._store = store

    def __getitem__(self, key: str) -> Any:
        if key in self._memory:
            return self._memory[key]
        if self._store is not None and key in self._keys:
            return self._store.load(key)
        raise NotInResultError(f"no record {key!r} in this run ({len(self._keys)} keys)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def run_items(
    model: Model,
    work: Work,
    items: Sequence[Item],
    *,
    store: ItemStore | None,
    done: Callable[[Item], None] = lambda item: None,
) -> dict[str, Any]:
    """Compute the items not yet in ``store`` with ``model``, here; the records (all of them
    without a store; none with one: they are saved there).

    Several writers may share the store: an item another live writer holds is waited for after
    the others, and taken over if that writer dies; once another writer has completed the
    store (and may have merged its items away), nothing more is computed.
    """
    records: dict[str, Any] = {}
    deferred: list[Item] = []
    for item in items:
        if store is not None and store.finished_elsewhere():
            return records  # another writer completed the store: nothing is left to do
        if store is None:
            records[item.key] = work(model, item.payload)
        elif store.verify(item.key):  # there already (a damaged one is reported, recomputed)
            pass
        elif not store.claim(item.key):
            deferred.append(item)
            continue
        else:
            _compute_claimed(model, work, item, store)
        done(item)
    for item in deferred:  # written by another writer, or computed here if that writer died
        assert store is not None
        if store.finished_elsewhere():
            return records
        while store.wait_for(item.key) is None:
            if store.finished_elsewhere():
                return records
            if store.claim(item.key):
                _compute_claimed(model, work, item, store)
                break
        done(item)
    return records


def _compute_claimed(model: Model, work: Work, item: Item, store: ItemStore) -> None:
    try:
        if store.finished_elsewhere():
            return  # completed by another writer since our check
        if not store.verify(item.key):  # saved by another writer since our check
            store.save(item.key, work(model, item.payload))
    finally:
        store.release(item.key)


def _bar(items: Sequence[Item], progress: bool, desc: str, unit: str) -> Any:
    return tqdm(total=sum(i.size for i in items), desc=desc, unit=unit, disable=not progress)


class LocalRunner:
    """Run every item in this process with the model already loaded (the default)."""

    def map(
        self,
        model: Model,
        work: Work,
        items: Sequence[Item],
        *,
        store: ItemStore | None = None,
        progress: bool = True,
        desc: str = "",
        unit: str = "item",
    ) -> Mapping[str, Any]:
        """The record of every item by key, computing those not yet in ``store``."""
        with _bar(items, progress, desc, unit) as bar:
            memory = run_items(model, work, items, store=store, done=lambda i: bar.update(i.size))
        return Records([i.key for i in items], memory, store)

    def __repr__(self) -> str:
        return "LocalRunner()"


def as_runner(runner: Runner | None) -> Runner:
    """``runner``, or a ``LocalRunner`` for ``None``."""
    return LocalRunner() if runner is None else runner


# --- model sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """How a worker loads the model by itself.

    ``loader="load_model"``: ``mechlin.load_model(name, **kwargs)`` (a bundled name, a directory
    on a filesystem the workers see, a hub name); ``"tiny_model"``: ``mechlin.tiny_model(
    **kwargs)``; a callable: called with no arguments, it returns the model.
    """

    name: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    loader: Literal["load_model", "tiny_model"] | Callable[[], Any] = "load_model"

    def load(self) -> Model:
        """Load the model (in the calling process)."""
        if callable(self.loader):
            return self.loader()
        if self.loader == "tiny_model":
            from mechlin.tiny import tiny_model  # noqa: PLC0415 (builds a model: only here)

            return tiny_model(**self.kwargs)
        from mechlin.models import load_model  # noqa: PLC0415

        return load_model(self.name, **self.kwargs)

    def describe(self) -> str:
        if callable(self.loader):
            return f"{getattr(self.loader, '__qualname__', self.loader)}()"
        args = [repr(self.name)] if self.name and self.loader == "load_model" else []
        args += [f"{k}={v!r}" for k, v in self.kwargs.items() if v is not None]
        return f"{self.loader}({', '.join(args)})"


def as_model_source(model: Any) -> ModelSource:
    """The ``ModelSource`` of a model (what it recorded), a name, a directory or a function."""
    if isinstance(model, ModelSource):
        return model
    if hasattr(model, "cfg"):  # a loaded model (itself callable: checked first)
        recorded = getattr(model, "mechlin_source", None)
        if not isinstance(recorded, dict):
            raise ArgumentError(
                "RayRunner: this model records no source its workers could load it from (it "
                "was not made by mechlin.load_model or mechlin.tiny_model). Pass "
                "RayRunner(model=...) with a bundled name ('smollm2-135m'), a directory "
                "written by save_pretrained, or a zero-argument function returning the model"
            )
        return ModelSource(recorded["name"], dict(recorded["kwargs"]), recorded["loader"])
    if isinstance(model, str):
        if not model.strip():
            raise ArgumentError("RayRunner(model=''): name a model, a directory or a function")
        if model == "tiny":
            return ModelSource("tiny", {}, "tiny_model")
        return ModelSource(model)
    if isinstance(model, os.PathLike):
        if not Path(model).is_dir():
            raise ArgumentError(f"RayRunner(model={str(model)!r}): no such directory")
        return ModelSource(str(model))
    if callable(model):
        return ModelSource(loader=model)
    raise ArgumentTypeError(
        f"RayRunner(model=...) takes a bundled name, a directory, a zero-argument function "
        f"or a ModelSource, not a {type(model).__name__}"
    )


# --- Ray -----------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 (optional: only a RayRunner needs it)
    except ImportError:
        raise MissingExtraError(
            f"RayRunner needs Ray, which is not installed. Install it with:\n    {RAY_INSTALL}"
        ) from None
    return ray


class _Worker:
    """A Ray actor: loads the model once, then computes chunks of items."""

    def __init__(self, source: ModelSource, fingerprint: str, threads: int) -> None:
        import torch  # noqa: PLC0415 (in the worker process)

        torch.set_num_threads(threads)
        self.model = source.load()
        got = model_fingerprint(self.model)
        if got != fingerprint:
            raise ArgumentError(
                f"a Ray worker loaded {source.describe()} but got other weights than the model "
                f"passed to the analysis (fingerprint {got} vs {fingerprint}): pass "
                "RayRunner(model=...) that loads the very same model"
            )

    def identity(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid()}

    def run(
        self, work: Work, items: list[Item], store_spec: tuple[str, str, dict[str, Any]] | None
    ) -> dict[str, Any]:
        store = None
        if store_spec is not None:
            root, kind, settings = store_spec
            store = ItemStore(root, kind=kind, settings=settings)
        return run_items(self.model, work, items, store=store)


class RayRunner:
    """Run the items on Ray actors that each load the model once (see the module docstring).

    Args:
        num_workers: actors to start (one model each).
        gpus_per_worker: GPUs each actor holds (0: CPU workers; 1: one GPU each, and the model
            loads on it when its source says ``device=None``).
        cpus_per_worker: CPUs each actor holds.
        torch_threads: CPU threads of torch in each actor (default: ``cpus_per_worker``, at
            least 1). On CPU, results are bit-identical to a single-process run that uses as
            many threads (``torch.set_num_threads``): thread count changes float sums.
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None`` joins
            the one ``ray.init`` already started, ``RAY_ADDRESS``, or starts a local one.
        model: where the workers load the model from; ``None`` reads the model passed to the
            analysis (``model.mechlin_source``, recorded by ``mechlin.load_model``).
        chunk_size: items sent to an actor at once (each actor holds two chunks, so it never
            waits for the driver).
        max_failures: times a chunk may lose its worker before the run stops.

    The actors stay up between analyses with the same model; ``close()`` (or ``with``) ends them.
    """

    def __init__(
        self,
        num_workers: int = 2,
        *,
        gpus_per_worker: float = 0,
        cpus_per_worker: float = 1,
        torch_threads: int | None = None,
        address: str | None = None,
        model: Any = None,
        chunk_size: int = 4,
        max_failures: int = 3,
    ) -> None:
        for name, value in (("num_workers", num_workers), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"RayRunner(): {name}={value!r} must be a positive integer")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
            raise ArgumentError(f"RayRunner(): max_failures={max_failures!r} must be >= 0")
        for name, amount in (("gpus_per_worker", gpus_per_worker), ("cpus", cpus_per_worker)):
            if not isinstance(amount, int | float) or amount < 0:
                raise ArgumentError(f"RayRunner(): {name}={amount!r} must be >= 0")
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.address = address
        if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
            raise ArgumentError(f"RayRunner(): torch_threads={torch_threads!r} must be >= 1")
        self.torch_threads = torch_threads or max(1, int(cpus_per_worker))
        self.model = None if model is None else as_model_source(model)
        self.chunk_size = chunk_size
        self.max_failures = max_failures
        self._actors: dict[Any, dict[str, Any]] = {}  # actor -> its (host, pid)
        self._pool_key: tuple[ModelSource, str, int] | None = None
        self.replaced = 0  # workers that died and were replaced

    @property
    def workers(self) -> list[Any]:
        """The live actors (Ray handles): to watch them, or to ``ray.kill`` one in a test."""
        return list(self._actors)

    def map(
        self,
        model: Model,
        work: Work,
        items: Sequence[Item],
        *,
        store: ItemStore | None = None,
        progress: bool = True,
        desc: str = "",
        unit: str = "item",
    ) -> Mapping[str, Any]:
        """The record of every item by key, computing those not yet in ``store`` on the actors."""
        ray = _import_ray()
        source = self.model if self.model is not None else as_model_source(model)
        keys = [i.key for i in items]
        with _bar(items, progress, desc, unit) as bar:
            pending = []
            for item in items:
                if store is not None and store.verify(item.key):
                    bar.update(item.size)
                else:
                    pending.append(item)
            memory: dict[str, Any] = {}
            if pending:
                if not ray.is_initialized():
                    ray.init(address=self.address)
                self._start(ray, source, model_fingerprint(model))
                memory = self._dispatch(ray, work, pending, store, bar)
        return Records(keys, memory, store)

    def _start(self, ray: Any, source: ModelSource, fingerprint: str) -> None:
        key = (source, fingerprint, self.torch_threads)
        if self._pool_key == key and len(self._actors) == self.num_workers:
            return
        self.close()
        self._pool_key = key
        self._actor_class = ray.remote(_Worker).options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker
        )
        actors = [self._actor_class.remote(*key) for _ in range(self.num_workers)]
        owners = self._get(ray, [a.identity.remote() for a in actors])  # waits for the loads
        self._actors = dict(zip(actors, owners, strict=True))

    def _get(self, ray: Any, refs: Any) -> Any:
        """``ray.get``, re-raising an error of the work itself as that error."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _dispatch(
        self, ray: Any, work: Work, items: list[Item], store: ItemStore | None, bar: Any
    ) -> dict[str, Any]:
        chunks = [items[s : s + self.chunk_size] for s in range(0, len(items), self.chunk_size)]
        queue = deque(range(len(chunks)))
        spec = None if store is None else (str(store.root), store.kind, store.settings)
        inflight: dict[Any, tuple[Any, int]] = {}  # future -> (actor, chunk)
        failures: Counter[int] = Counter()
        memory: dict[str, Any] = {}

        def feed(actor: Any) -> None:
            while queue and sum(a is actor for a, _ in inflight.values()) < 2:
                c = queue.popleft()
                inflight[actor.run.remote(work, chunks[c], spec)] = (actor, c)

        for actor in self._actors:
            feed(actor)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, c = inflight.pop(ref)
            try:
                memory.update(self._get(ray, ref))
            except ray.exceptions.RayActorError:
                failures[c] += 1
                if failures[c] > self.max_failures:
                    raise MechlinError(
                        f"chunk {c} (items {chunks[c][0].key}..) lost its Ray worker "
                        f"{failures[c]} times: see the worker logs (out of memory?)"
                    ) from None
                lost = [c] + [k for r, (a, k) in list(inflight.items()) if a is actor]
                for r in [r for r, (a, _) in inflight.items() if a is actor]:
                    del inflight[r]
                owner = self._actors.pop(actor, None)
                if store is not None and owner is not None:  # its claims: nobody computes them
                    for k in lost:
                        for item in chunks[k]:
                            store.break_claim(item.key, owner)
                queue.extendleft(reversed(lost))
                replacement = self._actor_class.remote(*self._pool_key)  # type: ignore[misc]
                self._actors[replacement] = self._get(ray, replacement.identity.remote())
                self.replaced += 1
                feed(replacement)
                continue
            bar.update(sum(i.size for i in chunks[c]))
            feed(actor)
        return memory

    def close(self) -> None:
        """End the actors (their models are freed)."""
        if self._actors:
            ray = _import_ray()
            for actor in self._actors:
                ray.kill(actor)
        self._actors = {}
        self._pool_key = None

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RayRunner(num_workers={self.num_workers}, gpus_per_worker={self.gpus_per_worker}, "
            f"address={self.address!r}, chunk_size={self.chunk_size})"
        )


__all__ = [
    "Item",
    "LocalRunner",
    "ModelSource",
    "RayRunner",
    "Records",
    "Runner",
    "Work",
    "as_model_source",
    "as_runner",
    "run_items",
]
