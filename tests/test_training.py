"""CheckpointManager: exact resume across SIGKILL and SIGTERM, async saves, keep policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deltastore
from deltastore.training import retention
from deltastore.training.snapshot import HostSnapshot

from .conftest import assert_same

RUN = Path(__file__).with_name("training_run.py")
TOTAL = 30


def _start(
    store: Path, branch: str, mode: str, pause_at: int | None = None
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(RUN.parent.parent))
    pause = [] if pause_at is None else [str(pause_at)]
    return subprocess.Popen(
        [sys.executable, str(RUN), str(store), branch, str(TOTAL), mode, *pause],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run_to_end(store: Path, branch: str, mode: str) -> None:
    proc = _start(store, branch, mode)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"step {TOTAL}" in out


def _run_until(store: Path, branch: str, mode: str, step: int, sig: int) -> int:
    """Start a run, send ``sig`` once it printed ``step {step}``; return its exit status."""
    proc = _start(store, branch, mode, pause_at=step)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == f"step {step}":
            proc.send_signal(sig)
            break
    proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=300)


def _newest(store: Path, branch: str) -> Any:
    with deltastore.open(store) as s:
        return s.load(branch)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The final state of a run that was never interrupted."""
    store = tmp_path_factory.mktemp("straight") / "store"
    _run_to_end(store, "main", "sync")
    return _newest(store, "main")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resume_after_sigkill_is_bit_identical(straight: Any, tmp_path: Path, mode: str) -> None:
    store = tmp_path / "store"
    status = _run_until(store, "main", mode, 17, signal.SIGKILL)
    assert status == -signal.SIGKILL
    with deltastore.open(store) as s:
        assert s.info("main").step in (10, 15)  # 15, unless killed before its commit
    _run_to_end(store, "main", mode)
    final = _newest(store, "main")
    assert final["step"] == TOTAL
    assert_same(final, straight)  # weights, optimizer, scheduler, data position, generators


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_flushes_and_exits(straight: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    status = _run_until(store, "main", "async", 12, signal.SIGTERM)
    assert status == 143
    with deltastore.open(store) as s:
        assert s.info("main").step == 13  # the step after the signal arrived
        assert s.info("main").message.startswith("step ")
    _run_to_end(store, "main", "async")
    assert_same(_newest(store, "main"), straight)


# -- in-process behaviour --------------------------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(64, 32)


def test_fresh_start_resumes_nothing_and_changes_nothing(tmp_path: Path) -> None:
    model = _model()
    before = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    with deltastore.CheckpointManager(tmp_path / "s") as manager:
        assert manager.resume(model=model) is None
        assert manager.extra is None
    assert_same(model.state_dict(), before)


def test_maybe_save_follows_every_n_steps(tmp_path: Path) -> None:
    model = _model()
    with deltastore.CheckpointManager(tmp_path / "s", every_n_steps=3) as manager:
        saved = [step for step in range(1, 11) if manager.maybe_save(step, model=model)]
        assert saved == [3, 6, 9]
        assert [c.step for c in manager.store.log()] == [9, 6, 3]


def test_async_save_is_isolated_from_later_in_place_updates(tmp_path: Path) -> None:
    model = _model()
    with deltastore.CheckpointManager(tmp_path / "s", async_save=True) as manager:
        expected = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
        manager.save(1, model=model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # as the optimizer would, while the save is in flight
        checkpoint_id = manager.wait()
        assert checkpoint_id is not None
        assert_same(manager.store.load(checkpoint_id)["model"], expected)
        assert len(manager.blocking_seconds) == 1


def test_async_error_surfaces_at_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    with deltastore.CheckpointManager(tmp_path / "s", async_save=True) as manager:
        original = manager.store.save

        def failing_save(*args: Any, **kwargs: Any) -> str:
            raise deltastore.StorageError("write object abcd", OSError(28, "No space left"))

        monkeypatch.setattr(manager.store, "save", failing_save)
        manager.save(1, model=model)
        with pytest.raises(deltastore.AsyncSaveError, match="step 1 failed") as info:
            manager.save(2, model=model)
        assert isinstance(info.value.__cause__, deltastore.StorageError)
        monkeypatch.setattr(manager.store, "save", original)
        manager.save(3, model=model)
        assert manager.wait() is not None
        assert [c.step for c in manager.store.log()] == [3]


def test_close_flushes_the_save_in_flight(tmp_path: Path) -> None:
    model = _model()
    manager = deltastore.CheckpointManager(tmp_path / "s", async_save=True)
    manager.save(7, model=model)
    manager.close()
    with deltastore.open(tmp_path / "s") as s:
        assert s.info("main").step == 7


def test_keep_policy_moves_tags(tmp_path: Path) -> None:
    model = _model()
    losses = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]
    with deltastore.CheckpointManager(
        tmp_path / "s", keep_last=2, keep_best=2, monitor="loss", mode="min"
    ) as manager:
        ids = [
            manager.save(n + 1, model=model, metrics={"loss": loss})
            for n, loss in enumerate(losses)
        ]
        tags = {name: cid for name, (kind, cid) in manager.store.refs().items() if kind == "tag"}
    assert tags.pop("main/best") == ids[3]  # loss 1.0
    assert set(tags.values()) == {ids[5], ids[4], ids[3]}  # last two, and best two (1.0, 2.0)
    assert all(name.startswith("main/keep/") for name in tags)


def test_snapshot_reuses_its_buffers_and_keeps_types(tmp_path: Path) -> None:
    snapshot = HostSnapshot()
    state = {
        "w": torch.arange(6.0).reshape(2, 3).t(),
        "p": torch.nn.Parameter(torch.ones(3)),
        "n": 3,
    }
    first = snapshot.take(state)
    second = snapshot.take(state)
    assert first["w"].data_ptr() == second["w"].data_ptr()  # the same host buffer
    assert type(second["p"]) is torch.nn.Parameter and second["p"].requires_grad
    assert torch.equal(second["w"], state["w"]) and second["n"] == 3
    state["w"].add_(1)
    assert not torch.equal(second["w"], state["w"])


def test_resume_with_a_part_the_checkpoint_lacks_is_a_clear_error(tmp_path: Path) -> None:
    model = _model()
    with deltastore.CheckpointManager(tmp_path / "s") as manager:
        manager.save(1, model=model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="holds no optimizer state"):
            manager.resume(model=model, optimizer=optimizer)


# -- the keep policy as properties -----------------------------------------------------------

histories = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=1000),
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    min_size=0,
    max_size=30,
)
policies = st.builds(
    retention.KeepPolicy,
    last=st.one_of(st.none(), st.integers(1, 10)),
    every_n_steps=st.one_of(st.none(), st.integers(1, 50)),
    best=st.one_of(st.none(), st.integers(1, 5)),
    monitor=st.just("loss"),
    mode=st.sampled_from(["min", "max"]),
)


def _candidates(history: list[tuple[int, float | None]]) -> list[retention.Candidate]:
    return [
        retention.Candidate(f"{n:064x}", step, {} if loss is None else {"loss": loss})
        for n, (step, loss) in enumerate(history)
    ]


@settings(max_examples=300, deadline=None)
@given(policies, histories)
def test_retention_properties(policy: retention.KeepPolicy, history: list[Any]) -> None:
    candidates = _candidates(history)
    result = retention.select(policy, candidates)
    ids = [c.id for c in candidates]
    assert result.kept <= set(ids)
    if candidates:
        assert ids[0] in result.kept  # the newest is where a crashed run resumes
    if policy.last is not None:
        assert set(ids[: policy.last]) <= result.kept
    if policy.every_n_steps is not None:
        assert {c.id for c in candidates if c.step % policy.every_n_steps == 0} <= result.kept
    scored = [
        c for c in candidates if "loss" in c.metrics and c.metrics["loss"] == c.metrics["loss"]
    ]
    if scored:
        sign = 1 if policy.mode == "min" else -1
        best_value = min(sign * c.metrics["loss"] for c in scored)
        assert result.best is not None
        best = next(c for c in candidates if c.id == result.best)
        assert sign * best.metrics["loss"] == best_value
        if policy.best is not None:
            assert result.best in result.kept
            better = [c for c in scored if sign * c.metrics["loss"] < sign * best.metrics["loss"]]
            assert not better
    else:
        assert result.best is None
    # Nothing beyond what some rule asks for.
    if not policy.keeps_everything:
        allowed = set(ids[:1]) | set(ids[: policy.last or 0])
        if policy.every_n_steps:
            allowed |= {c.id for c in candidates if c.step % policy.every_n_steps == 0}
        allowed |= set(retention.rank_best(policy, candidates)[: policy.best or 0])
        assert result.kept == allowed
