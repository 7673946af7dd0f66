"""Running the static commands on every rank of a job (torchrun, srun): one report, printed by rank 0.

    torchrun --nproc-per-node 8 -m modscope summary train.py:build_model --json

Under a launcher (``TORCHELASTIC_RUN_ID``, or ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` in the
environment) every rank initialises the default process group (unless the job already did), builds the
TARGET (a factory that shards the model: ``fully_shard``, ``distribute_tensor``, ``parallelize_module``),
summarises its own part, and sends it to rank 0, which prints the merged report; the other ranks print
nothing. Every step that waits on other ranks first agrees on failures, so an error on one rank makes every
rank exit with the same code instead of hanging; rank 0 prints it, naming the rank(s).

``--distributed`` without a launcher starts a one-process world (a free local port), so a factory that
calls ``init_process_group``/``init_device_mesh`` can be inspected on a laptop; ``--no-distributed`` makes
each rank work alone and print its own report.
"""
from __future__ import annotations

import datetime
import gc
import os
import socket
import time
from typing import Annotated, Callable, Optional

import typer

from modscope.errors import EXIT_USAGE, LoadError, ModscopeError, UsageError

DistributedOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--distributed/--no-distributed",
        help="Gather one report from every rank (default: on when launched by torchrun/srun with RANK, "
        "WORLD_SIZE, MASTER_ADDR, MASTER_PORT set). Without a launcher: a one-process world.",
        show_default=False,
    ),
]
BackendOpt = Annotated[
    Optional[str],
    typer.Option(
        "--backend",
        help="Process group backend when modscope initialises it (default: cpu:gloo,cuda:nccl with CUDA, else gloo).",
        show_default=False,
    ),
]
DistTimeoutOpt = Annotated[
    float,
    typer.Option("--dist-timeout", min=1, help="Seconds any rank waits for the others before giving up."),
]

_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# what torch says when a factory needs a process group and there is none
_NEEDS_PROCESS_GROUP = ("env:// rendezvous", "Default process group has not been initialized", "init_process_group")


def launched() -> bool:
    """True inside a torchrun/srun-style launch (the env:// rendezvous variables are set)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or all(v in os.environ for v in _LAUNCHER_VARS)


def _wait_for_exit(pid: int, *, seconds: float) -> None:
    """Until process ``pid`` (rank 0, on this host) has ended or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def printing_rank(distributed: bool | None) -> bool:
    """False on the ranks other than 0 of a launch (for commands that read files and need no process group)."""
    if distributed is False or (distributed is None and not launched()):
        return True
    return os.environ.get("RANK", "0") == "0"


def session(distributed: bool | None, backend: str | None = None, timeout: float = 300.0) -> "Session":
    """A ``Session`` for a command: distributed when asked, or (by default) when launched by torchrun/srun."""
    wanted = launched() if distributed is None else distributed
    return DistributedSession(backend, timeout) if wanted else Session()


class Session:
    """One process working alone: build, report, print. Commands set ``exit_code`` for findings."""

    active = False
    rank = 0
    is_main = True

    def __init__(self):
        self.exit_code = 0

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None and self.exit_code:
            raise typer.Exit(self.exit_code)
        return False

    def build(self, load: Callable):
        try:
            return load()
        except LoadError as exc:
            text = str(exc)
            if any(sign in text for sign in _NEEDS_PROCESS_GROUP):
                raise LoadError(
                    f"{text} (the target needs torch.distributed: launch it with torchrun, or pass --distributed "
                    "for a one-process world)"
                ) from exc
            raise

    def summary(self, model, **kwargs):
        import modscope

        return modscope.summary(model, **kwargs)

    def audit(self, model, **kwargs):
        import modscope

        return modscope.audit(model, **kwargs)

    def on_main(self, work: Callable):
        """Run ``work`` on the printing rank only (None elsewhere)."""
        return work()

    def emit(self, report, *, as_json: bool, view=None, width: int | None = None) -> None:
        from modscope.cli.common import emit

        emit(report, as_json=as_json, view=view, width=width)


class DistributedSession(Session):
    """Every rank of the job: rank 0 prints, every step that waits on others agrees on failures first."""

    active = True

    def __init__(self, backend: str | None, timeout: float):
        super().__init__()
        self._backend = backend
        self._timeout = timeout
        self._owned = False

    # --- process group -------------------------------------------------------------------------------

    def __enter__(self) -> "DistributedSession":
        import torch

        if not torch.distributed.is_available():
            raise UsageError("--distributed needs a torch build with torch.distributed (this one has none)")
        dist = torch.distributed
        if not dist.is_initialized():
            if not launched():
                _one_process_world()
            _set_cuda_device()
            backend = self._backend or ("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
            try:
                dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=self._timeout))
            except Exception as exc:  # bad backend name, unreachable MASTER_ADDR, ...
                raise UsageError(f"cannot initialise the process group ({backend}): {type(exc).__name__}: {exc}")
            self._owned = True
        self.rank = dist.get_rank()
        self.is_main = self.rank == 0
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        import torch.distributed as dist

        code = self.exit_code if exc is None else _exit_code(exc)
        try:
            codes = [None] * dist.get_world_size()
            dist.all_gather_object(codes, (code, os.getpid(), socket.gethostname()))  # failures were agreed
            agreed = codes[0][0] or max(c for c, _, _ in codes)
            main_pid = codes[0][1] if codes[0][2] == socket.gethostname() else None
        finally:
            if self._owned and dist.is_initialized():
                gc.collect()  # finished collectives still referenced from cycles would outlive the group, and
                dist.destroy_process_group()  # gloo may then abort the interpreter's shutdown (SIGABRT)
        if self.is_main:
            if exc is None and agreed:
                raise typer.Exit(agreed)
            return False  # rank 0 reports its own error (it names failing ranks)
        if agreed and main_pid is not None:  # torchrun ends the whole job when any of its ranks exits with an
            _wait_for_exit(main_pid, seconds=30.0)  # error: on rank 0's host, let rank 0 say why first
        raise typer.Exit(agreed)  # other ranks stay silent and exit with the same code

    # --- steps -----------------------------------------------------------------------------------------

    def build(self, load: Callable):
        """Build the TARGET on every rank; any rank's failure fails them all (named by rank 0)."""
        model, failure = None, None
        try:
            model = load()
        except Exception as exc:
            failure = exc
        self._agree(failure)
        return model

    def summary(self, model, **kwargs):
        import modscope

        return modscope.distributed_summary(model, **kwargs)

    def audit(self, model, **kwargs):
        import modscope

        return modscope.distributed_audit(model, **kwargs)

    def on_main(self, work: Callable):
        return work() if self.is_main else None

    def emit(self, report, *, as_json: bool, view=None, width: int | None = None) -> None:
        if self.is_main:
            super().emit(report, as_json=as_json, view=view, width=width)

    def _agree(self, failure: BaseException | None) -> None:
        import torch.distributed as dist

        mine = None if failure is None else (_message(failure), _exit_code(failure))
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        failed = [(rank, item) for rank, item in enumerate(everyone) if item is not None]
        if not failed:
            return
        if not self.is_main:
            raise typer.Exit(failed[0][1][1])  # __exit__ turns this into the agreed code, silently
        if len(everyone) == 1 and failure is not None:
            raise failure
        from modscope.collect.distributed.ranks import failures_text

        error = LoadError(failures_text([(rank, message) for rank, (message, _) in failed], len(everyone)))
        error.exit_code = failed[0][1][1]
        raise error


def _message(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ModscopeError) else f"unexpected {type(exc).__name__}: {exc}"
    if "initialize the default process group twice" in text:
        text += (
            " (modscope already initialised the process group from the launcher's environment: guard the call "
            "with `if not dist.is_initialized():`)"
        )
    return text


def _exit_code(exc: BaseException) -> int:
    from modscope.cli.common import exit_code_for

    return exit_code_for(exc)


def _one_process_world() -> None:
    """--distributed without a launcher: rank 0 of a world of 1 on a free local port."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


def _set_cuda_device() -> None:
    import torch

    local = os.environ.get("LOCAL_RANK")
    if local is not None and local.isdigit() and torch.cuda.is_available():
        torch.cuda.set_device(int(local) % torch.cuda.device_count())


__all__ = ["BackendOpt", "DistTimeoutOpt", "DistributedOpt", "EXIT_USAGE", "Session", "launched", "session"]
