"""Progress bars: counted per object or checkpoint where the work is, shown by how long it lasts.

Bars were keyed on bytes and drawn only above 256 MiB (10,000 objects for gc's
sweep), so the operations whose work is per object never showed one on a big
store: a quick verify of 117k objects ran 8 s in silence, and so did thin, forget,
stats by prefix, and a diff or full verify of many small chunks.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import deltastore
from deltastore import progress
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction

from .conftest import trained_like

CHUNK = 1024


def fill(store: deltastore.Store, saves: int = 4) -> None:
    """Saves of weights (several chunks each) and optimizer state, every one different."""
    for step in range(saves):
        w = trained_like((32, 32), step)
        store.save({"model": {"w": w, "b": w[0]}, "optim": {"m": w * 0.1}}, step=step)


@pytest.fixture
def forced(tmp_path: Path) -> Iterator[deltastore.Store]:
    """A store whose bars are forced on (``progress=True``), as in a log file."""
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK, progress=True) as s:
        fill(s)
        yield s


def bar_line(err: str, desc: str) -> str:
    """The last state tqdm drew of the bar ``desc`` (it redraws with carriage returns)."""
    drawn = [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]
    assert drawn, f"no {desc!r} bar in {err!r}"
    return drawn[-1]


def object_count(store: deltastore.Store) -> int:
    with read_transaction(store.engine) as conn:
        return queries.object_totals(conn)[0]


def test_quick_verify_counts_the_objects_it_checks(
    forced: deltastore.Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "BATCH", 7)  # several batches of stat calls on the pool
    capsys.readouterr()
    assert forced.verify().ok
    n = object_count(forced)
    line = bar_line(capsys.readouterr().err, "verify")
    assert f"{n}/{n}" in line and "obj/s" in line and "100%" in line


def test_thin_counts_the_checkpoints_it_thins(
    forced: deltastore.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert len(forced.thin("optim/*", keep_newest=1).checkpoints) == 3
    assert "3/3" in bar_line(capsys.readouterr().err, "thin")
    forced.thin("optim/*", keep_newest=1, dry_run=True)  # a dry run changes nothing: no bar
    assert "thin:" not in capsys.readouterr().err


def test_forget_counts_the_checkpoints_it_removes(
    forced: deltastore.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert len(forced.forget(deltastore.KeepPolicy(last=1)).forgotten) == 3
    line = bar_line(capsys.readouterr().err, "forget")
    assert "3/3" in line and "checkpoint/s" in line


def test_stats_by_prefix_counts_every_chunk_list_item(
    forced: deltastore.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    report = forced.stats_by_prefix()
    # 4 saves of w (4 chunks), b (1) and m (4)
    assert "36/36" in bar_line(capsys.readouterr().err, "stats")
    with deltastore.open(forced.root, progress=False) as quiet:
        assert quiet.stats_by_prefix() == report  # the bar changes nothing it reports
    assert capsys.readouterr().err == ""


def test_gc_counts_the_objects_its_mark_decides(
    forced: deltastore.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only gc's sweep had a bar: its mark (0.7 s on 75k objects: the catalog's objects and
    chunk lists read, the files listed, the delta bases walked) ran in silence before it."""
    forced.forget(deltastore.KeepPolicy(last=1))
    n = object_count(forced)  # the mark decides every catalogued object, live or not
    capsys.readouterr()
    report = forced.gc(dry_run=True)  # a dry run is the mark alone
    assert 0 < report.live_objects < n
    line = bar_line(capsys.readouterr().err, "gc mark")
    assert f"{n}/{n}" in line and "obj/s" in line and "100%" in line
    forced.gc()
    err = capsys.readouterr().err
    assert f"{n}/{n}" in bar_line(err, "gc mark")
    assert f"{report.files}/{report.files}" in bar_line(err, "gc")


def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr a terminal, as a user at a shell has it, with the bar's delay taken away.

    Called in the test itself: pytest sets its own sys.stderr again between a fixture's
    setup and the test.
    """
    err = io.StringIO()
    monkeypatch.setattr(err, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "AUTO_DELAY_S", 0.0)
    return err


def test_on_a_terminal_bars_show_whatever_the_size_once_the_work_lasts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below 256 MiB and 10,000 objects nothing showed, however long it took: a diff or full
    verify of many small chunks, gc's sweep of a few thousand files.  What decides now is
    time (tested here with the delay at 0)."""
    shown = terminal(monkeypatch)
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK) as store:
        fill(store)
        store.diff("main~1", "main")
        store.verify(full=True)
        store.forget(deltastore.KeepPolicy(last=1))
        store.gc()
    err = shown.getvalue()
    for desc in ("save", "diff", "verify", "forget", "gc mark", "gc"):
        assert bar_line(err, desc)
    assert "B/s" in bar_line(err, "diff") and "obj/s" in bar_line(err, "gc")


def test_on_a_terminal_quick_work_shows_no_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bar waits a second before it draws: saves and checks that take less stay silent."""
    err = terminal(monkeypatch)
    monkeypatch.setattr(progress, "AUTO_DELAY_S", 60.0)
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK) as store:
        fill(store, saves=2)
        store.verify(full=True)
        store.stats_by_prefix()
    assert err.getvalue() == ""


def test_progress_false_shows_no_bar_even_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = terminal(monkeypatch)
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK, progress=False) as store:
        fill(store, saves=2)
        store.verify()
        store.thin("optim/*", keep_newest=1)
        store.gc()
    assert err.getvalue() == ""


def test_a_bar_is_not_drawn_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with deltastore.open(tmp_path / "s", create=True, chunk_size=CHUNK) as store:
        fill(store, saves=2)
        store.verify()
        store.thin("optim/*", keep_newest=1)
    assert capsys.readouterr().err == ""


def test_batched_updates_add_up_to_the_count() -> None:
    seen: list[int] = []
    counter = progress.Batched(seen.append)
    for _ in range(2 * progress.BATCH + 5):
        counter.add()
    counter.flush()
    assert seen == [progress.BATCH, progress.BATCH, 5]
    progress.Batched(None).add()  # no bar: nothing to tell
