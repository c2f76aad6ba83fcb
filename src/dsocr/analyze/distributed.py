"""``dsocr analyze --scheduler local|ADDRESS``: the per-trace work of several traces on a Dask cluster.

Each trace's loading and per-trace tables (:func:`dsocr.analyze.pipeline.analyze_trace`: attribution,
stage tables, NVIDIA-equal projection and kernel summaries, idle gaps, module times) run as one task
on a Dask worker, the way NVIDIA's nsys recipes fan out over report files; this process then checks
that the traces are one study (in input order, the same checks as the one-process path) and combines
them exactly as the one-process path does, so the outputs are byte-identical.

What crosses the network: the task gets the trace's path (not its data: the workers read the file
themselves, so every worker must see the same path, e.g. a shared file system) and sends back the
trace's :class:`~dsocr.analyze.analysis.TraceResult` (polars frames pickled by Dask: the stage
instances, kernel and projection summaries; tens of kB to a few MB per trace, not the trace's rows).

``local`` starts a :class:`distributed.LocalCluster` of worker processes (one thread each) on this
machine; any other value is a scheduler address (``tcp://host:8786``). Needs the ``dask`` extra.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dsocr.contract.errors import EnvironmentProblem, RunFailed

if TYPE_CHECKING:
    from dsocr.analyze.analysis import TraceResult
    from dsocr.analyze.policy import RuntimePolicy

LOCAL: Final = "local"
INSTALL: Final = 'pip install "dsocr[dask]"'


def check_available() -> None:
    """EnvironmentProblem (exit 5) naming the extra when dask.distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(
            f"--scheduler needs dask and distributed, which are not installed; {INSTALL} (or drop --scheduler)"
        ) from None


@contextlib.contextmanager
def client(scheduler: str, tasks: int) -> Iterator[Any]:
    """A Dask client: a local cluster of processes (``local``) or the scheduler at an address."""
    check_available()
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        workers = max(1, min(tasks, os.cpu_count() or 1))
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as c,
        ):
            yield c
        return
    try:
        c = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise RunFailed(
            f"--scheduler {scheduler}: no Dask scheduler answered ({exc}); start one (dask scheduler) or use local"
        ) from None
    with c:
        yield c


def _task(given: str, resolved: str, policy: RuntimePolicy) -> tuple[TraceResult, list[str]]:
    """One trace's per-trace work, on a Dask worker (the run-time policy and polars engine of the one-process path)."""
    from dsocr.analyze.pipeline import analyze_trace, polars_engine

    with polars_engine(policy):
        return analyze_trace(Path(given), None, Path(resolved), None, policy)


def analyze_traces(
    scheduler: str, paths: Sequence[Path], resolved: Sequence[Path], policy: RuntimePolicy
) -> Iterator[tuple[TraceResult, list[str]]]:
    """Each trace's (result, warnings), in input order, computed on the cluster (errors re-raised here)."""
    with client(scheduler, len(paths)) as c:
        futures = [
            c.submit(_task, str(p), str(r), policy, key=f"dsocr-trace-{i}", pure=False)
            for i, (p, r) in enumerate(zip(paths, resolved, strict=True))
        ]
        from distributed import KilledWorker

        try:
            for p, f in zip(paths, futures, strict=True):
                try:
                    result = f.result()
                except KilledWorker:
                    raise RunFailed(
                        f"{p}: the Dask workers running it died (out of memory or killed) as often as the scheduler "
                        "allows; give the workers more memory, or analyze this trace alone"
                    ) from None
                except OSError as exc:
                    raise RunFailed(
                        f"{p}: lost the Dask scheduler while waiting for its result ({exc}); check the cluster, retry"
                    ) from None
                yield result
        finally:
            for f in futures:
                f.cancel()
