"""CheckpointManager: the training-loop side of deltastore.

::

    manager = deltastore.CheckpointManager("runs/exp1", every_n_steps=25, keep_best=3,
                                           monitor="loss", async_save=True)
    start = manager.resume(model=model, optimizer=opt, scheduler=sched) or 0
    for step in range(start + 1, total + 1):
        loss = train_step(...)
        manager.maybe_save(step, model=model, optimizer=opt, scheduler=sched,
                           metrics={"loss": loss}, extra={"data": sampler_position})
    manager.close()

Every save is kept in the store (deduplicated, delta-encoded); the keep policy
only decides which checkpoints gc may later drop, through tags.  A saved
state is ``{"step", "rng", "model", "optimizer", "scheduler", "scaler",
"extra"}`` (the parts given), so ``store.load(ref)`` reads it without this
class, and ``resume`` puts every part back, random generators included, so
the resumed run is bit-identical to one that never stopped.

With ``async_save`` a save returns once the state is copied to host memory
(into buffers reused from the last save); one background thread encodes and
commits it.  At most one save is in flight: the next save first waits for
it.  A background failure is raised, as AsyncSaveError, by the next call
(``save``, ``maybe_save``, ``wait`` or ``close``).  ``close()`` and interpreter
exit flush.  On SIGTERM (preemption) the next ``maybe_save`` saves whatever
the step, flushes and exits with status 143.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from deltastore import refs
from deltastore.errors import AsyncSaveError, RefNotFoundError
from deltastore.store import Store
from deltastore.store import open as open_store
from deltastore.training import rng
from deltastore.training.retention import Candidate, KeepPolicy, select
from deltastore.training.snapshot import HostSnapshot

#: Exit status after a save forced by SIGTERM, as a shell reports death by SIGTERM.
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


class CheckpointManager:
    """Saves a training run's state every N steps and/or seconds, and resumes it exactly."""

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        branch: str = refs.DEFAULT_BRANCH,
        every_n_steps: int | None = None,
        every_n_seconds: float | None = None,
        keep_last: int | None = None,
        keep_every_n_steps: int | None = None,
        keep_best: int | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        async_save: bool = False,
        handle_sigterm: bool = True,
    ) -> None:
        refs.validate_name(branch)
        if every_n_steps is not None and (type(every_n_steps) is not int or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive int, not {every_n_steps!r}")
        if every_n_seconds is not None and not every_n_seconds > 0:
            raise ValueError(f"every_n_seconds must be positive, not {every_n_seconds!r}")
        self.policy = KeepPolicy(keep_last, keep_every_n_steps, keep_best, monitor, mode)
        self.monitor = monitor
        self._owns_store = not isinstance(store, Store)
        self.store = open_store(Path(store), create=True) if not isinstance(store, Store) else store
        self.branch = branch
        self.every_n_steps = every_n_steps
        self.every_n_seconds = every_n_seconds
        self.async_save = async_save
        #: The ``extra`` part of the state ``resume`` restored (None on a fresh start).
        self.extra: Any = None
        #: Seconds each save blocked the caller (snapshot, and waiting for the one before).
        self.blocking_seconds: list[float] = []
        self._snapshot = HostSnapshot()
        self._worker = (
            ThreadPoolExecutor(1, thread_name_prefix="deltastore-save") if async_save else None
        )
        self._pending: tuple[int, Future[str]] | None = None
        self._last_step: int | None = None
        self._last_time = time.monotonic()
        self._preempted = False
        self._closed = False
        self._previous_handler: Any = None
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        atexit.register(self.close)

    # -- when to save ---------------------------------------------------------------------------

    @property
    def preempted(self) -> bool:
        """True once SIGTERM arrived; the next maybe_save saves and exits."""
        return self._preempted

    def should_save(self, step: int) -> bool:
        """Whether ``maybe_save(step)`` would save now."""
        if self._preempted:
            return True
        if step == self._last_step:
            return False
        due_by_steps = self.every_n_steps is not None and step % self.every_n_steps == 0
        due_by_time = (
            self.every_n_seconds is not None
            and time.monotonic() - self._last_time >= self.every_n_seconds
        )
        return due_by_steps or due_by_time

    def maybe_save(self, step: int, **parts: Any) -> bool:
        """Save if a save is due at ``step`` (see :meth:`save` for ``parts``); say whether it did.

        After SIGTERM this saves whatever the step, waits for the save to be
        committed, and exits the process with status 143.
        """
        if not self.should_save(step):
            self._raise_failed()
            return False
        self.save(step, **parts)
        if self._preempted:
            self.close()
            raise SystemExit(PREEMPTED_EXIT_STATUS)
        return True

    # -- saving ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        extra: Any = None,
        metrics: dict[str, float | int] | None = None,
        message: str | None = None,
    ) -> str | None:
        """Save the training state at ``step``; return the checkpoint id (None when async).

        ``model``, ``optimizer``, ``scheduler`` and ``scaler`` are anything with
        ``state_dict()``; ``extra`` is any tree of user state (data position,
        EMA weights...).  Random generator states are always included.
        """
        if self._closed:
            raise RuntimeError("this CheckpointManager is closed")
        started = time.perf_counter()
        self.wait()  # at most one save in flight; raises the last one's error
        state = _training_state(step, model, optimizer, scheduler, scaler, extra)
        message = message if message is not None else f"step {step}"
        self._last_step, self._last_time = step, time.monotonic()
        if self._worker is None:
            checkpoint_id = self._commit(state, step, metrics, message)
            self.blocking_seconds.append(time.perf_counter() - started)
            return checkpoint_id
        snapshot = self._snapshot.take(state)
        self._pending = (step, self._worker.submit(self._commit, snapshot, step, metrics, message))
        self.blocking_seconds.append(time.perf_counter() - started)
        return None

    def _commit(
        self, state: dict[str, Any], step: int, metrics: dict[str, float | int] | None, message: str
    ) -> str:
        checkpoint_id = self.store.save(
            state, message, step=step, metrics=metrics, branch=self.branch
        )
        self._apply_retention()
        return checkpoint_id

    def _apply_retention(self) -> None:
        """Move the tags that say what the keep policy keeps (``<branch>/best``, ``/keep/``)."""
        history = [Candidate(c.id, c.step, c.metrics) for c in self.store.log(self.branch)]
        retained = select(self.policy, history)
        if retained.best is not None:
            self.store.tag(f"{self.branch}/best", retained.best, force=True)
        if self.policy.keeps_everything:
            return
        prefix = f"{self.branch}/keep/"
        wanted = {f"{prefix}{checkpoint_id[:16]}": checkpoint_id for checkpoint_id in retained.kept}
        for name, (kind, _) in self.store.refs().items():
            if name.startswith(prefix) and kind == refs.TAG and name not in wanted:
                self.store.delete_ref(name)
        for name, checkpoint_id in wanted.items():
            self.store.tag(name, checkpoint_id, force=True)

    def wait(self) -> str | None:
        """Wait for the save in flight, if any; return its id.  Raises its error, if it failed."""
        if self._pending is None:
            return None
        step, future = self._pending
        try:
            return future.result()
        except BaseException as exc:
            raise AsyncSaveError(step, exc) from exc
        finally:
            self._pending = None

    def _raise_failed(self) -> None:
        if self._pending is not None and self._pending[1].done():
            self.wait()

    # -- resuming -------------------------------------------------------------------------------

    def resume(
        self,
        ref: str | None = None,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        restore_rng: bool = True,
        strict: bool = True,
    ) -> int | None:
        """Restore every given part, and the random generators, from ``ref`` (default: the branch).

        Returns the saved step, or None when the branch has no checkpoint yet
        (a fresh start: nothing is changed).  The saved ``extra`` is put in
        :attr:`extra`.
        """
        self.wait()
        if ref is None:
            try:
                self.store.resolve(self.branch)
            except RefNotFoundError:
                return None
        state = self.store.load(ref or self.branch)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(
                f"checkpoint {ref or self.branch!r} was not saved by a CheckpointManager"
            )
        for name, target in (
            ("optimizer", optimizer),
            ("scheduler", scheduler),
            ("scaler", scaler),
        ):
            if target is not None:
                if name not in state:
                    raise ValueError(f"checkpoint {ref or self.branch!r} holds no {name} state")
                target.load_state_dict(state[name])
        if model is not None:
            if "model" not in state:
                raise ValueError(f"checkpoint {ref or self.branch!r} holds no model state")
            model.load_state_dict(state["model"], strict=strict)
        if restore_rng and "rng" in state:
            rng.restore(state["rng"])
        self.extra = state.get("extra")
        self._last_step = state["step"]
        self._last_time = time.monotonic()
        step: int | None = state["step"]
        return step

    # -- lifecycle ------------------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the state is consistent at a step boundary, not in the middle of
        # optimizer.step(), so the save happens at the next maybe_save.
        self._preempted = True

    def close(self) -> None:
        """Flush the save in flight, then release the worker and (if this opened it) the store."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self.wait()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _training_state(
    step: int, model: Any, optimizer: Any, scheduler: Any, scaler: Any, extra: Any
) -> dict[str, Any]:
    if type(step) is not int or step < 0:
        raise ValueError(f"step must be a non-negative int, not {step!r}")
    state: dict[str, Any] = {"step": step, "rng": rng.capture()}
    for name, part in (
        ("model", model),
        ("optimizer", optimizer),
        ("scheduler", scheduler),
        ("scaler", scaler),
    ):
        if part is not None:
            state[name] = part.state_dict()
    if extra is not None:
        state["extra"] = extra
    return state
