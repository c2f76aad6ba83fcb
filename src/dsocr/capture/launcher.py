"""The launcher of a data-parallel capture: N workers, one per listed device, in one process tree.

``python -m dsocr.capture.launcher --config W0.json --config W1.json ... [-- WORKER COMMAND]``
starts one worker per config (``python -m dsocr.capture.worker --config Wk.json`` unless a worker
command is given after ``--``), all at once, so that ``nsys profile`` around the launcher traces
them in one session (nsys follows child processes). Their output is passed on line by line; the
workers' own ``finished`` events are held back and one ``finished`` is printed when every worker
finished, so the driver sees one worker that finished or failed. When a worker fails the launcher
stops the others (they may wait at a barrier, :mod:`dsocr.capture.barrier`) and exits with the
failed worker's code. Ctrl-C (SIGINT to the process group) reaches every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dsocr.capture import progress
from dsocr.contract.errors import ExitCode

WORKER_MODULE: Final = "dsocr.capture.worker"
_STOP_GRACE_S: Final = 10.0
_INTERRUPT_GRACE_S: Final = 20.0


def _pump(rank: int, proc: subprocess.Popen[str], lock: threading.Lock, state: dict[int, str]) -> None:
    """Pass worker ``rank``'s lines on; note its ``finished`` / ``failed`` events in ``state``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = progress.parse(line)
        if event is not None and event.event == progress.FINISHED:
            state[rank] = progress.FINISHED
            continue
        if event is not None and event.event == progress.FAILED:
            state[rank] = progress.FAILED
        with lock:
            sys.stdout.write(line)
            sys.stdout.flush()


def _stop_all(procs: Sequence[subprocess.Popen[str]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=_STOP_GRACE_S)


def launch(configs: Sequence[Path], worker: Sequence[str]) -> int:
    """Run one worker per config at once; the exit code (0 when every worker finished)."""
    lock = threading.Lock()
    state: dict[int, str] = {}
    procs = [
        subprocess.Popen(
            [*worker, "--config", str(c)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1
        )
        for c in configs
    ]
    pumps = [threading.Thread(target=_pump, args=(k, p, lock, state), daemon=True) for k, p in enumerate(procs)]
    for t in pumps:
        t.start()
    failed: int | None = None
    try:
        pending = set(range(len(procs)))
        while pending and failed is None:
            for k in sorted(pending):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[k].wait(timeout=0.05)
                if procs[k].returncode is not None:
                    pending.discard(k)
                    if procs[k].returncode != 0 or state.get(k) == progress.FAILED:
                        failed = k
                        break
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group: give the workers time to write their timing files
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
                p.wait(timeout=_INTERRUPT_GRACE_S)
        _stop_all(procs)
        return int(ExitCode.INTERRUPTED)
    if failed is not None:
        _stop_all(procs)
    for t in pumps:
        t.join(timeout=_STOP_GRACE_S)
    if failed is not None:
        code = procs[failed].returncode
        print(f"dsocr launcher: worker {failed} failed (exit {code}); the others were stopped", file=sys.stderr)
        return code if code else int(ExitCode.RUN_FAILED)
    missing = [k for k in range(len(procs)) if state.get(k) != progress.FINISHED]
    if missing:
        print(f"dsocr launcher: worker(s) {missing} exited without finishing", file=sys.stderr)
        return int(ExitCode.RUN_FAILED)
    progress.emit(progress.FINISHED, workers=len(procs), timing=[str(c) for c in configs])
    return int(ExitCode.OK)


def main(argv: list[str] | None = None) -> int:
    """``python -m dsocr.capture.launcher --config W0.json --config W1.json [-- WORKER COMMAND]``."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    worker: list[str] = [sys.executable, "-m", WORKER_MODULE]
    if "--" in args_in:
        at = args_in.index("--")
        args_in, worker = args_in[:at], args_in[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m dsocr.capture.launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, type=Path, help="one worker config per worker")
    args = parser.parse_args(args_in)
    return launch(args.config, worker)


if __name__ == "__main__":
    sys.exit(main())
