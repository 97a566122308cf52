"""Every deltastore must read the stores older versions wrote, bit for bit.

tests/golden/store-v1 was written once by format version 1
(tests/golden/make_golden.py) and is never regenerated.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path

import deltastore
from deltastore import layout

from .conftest import assert_same
from .golden.make_golden import golden_state

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_store_v1_reads_bit_exactly(tmp_path: Path) -> None:
    # A copy: opening may upgrade the catalog schema, and the fixture must stay as written.
    root = shutil.copytree(GOLDEN / "store-v1", tmp_path / "store")
    expected = json.loads((GOLDEN / "store-v1.json").read_text())
    with deltastore.open(root) as store:
        log = list(store.log())
        assert [c.id for c in log] == [e["id"] for e in reversed(expected)]
        for entry in expected:
            assert_same(store.load(entry["id"]), golden_state(entry["step"]))
            assert store.info(entry["id"]).metrics == {"loss": 1.0 / entry["step"]}


def test_store_v1_holds_deltas(tmp_path: Path) -> None:
    """The fixture must exercise the delta path, not only full objects."""
    from deltastore.codecs import Transform, read_header

    transforms = set()
    for path in (GOLDEN / "store-v1" / "objects").rglob("*"):
        if path.is_file():
            object_id = path.parent.name + path.name
            transforms.add(read_header(path.read_bytes(), object_id).transform)
    assert transforms == {Transform.NONE, Transform.PLANES, Transform.XOR_PLANES}


def test_writing_to_a_v1_store_raises_its_format_and_keeps_its_history(tmp_path: Path) -> None:
    """Reading leaves FORMAT at 1 (older readers still work); the first save raises it to 2."""
    root = shutil.copytree(GOLDEN / "store-v1", tmp_path / "store")
    expected = json.loads((GOLDEN / "store-v1.json").read_text())
    with deltastore.open(root) as store:
        store.load()
        assert json.loads((root / "FORMAT").read_text())["deltastore_store_format"] == 1
        newest = golden_state(expected[-1]["step"])
        store.save(newest, "on top of v1", step=999)
        assert json.loads((root / "FORMAT").read_text())["deltastore_store_format"] == 2
        assert_same(store.load("main"), newest)
        for entry in expected:
            assert_same(store.load(entry["id"]), golden_state(entry["step"]))


def test_a_ref_change_on_a_v1_store_raises_its_format_before_taking_the_writer_lock(
    tmp_path: Path,
) -> None:
    """A tag on a v1 store raised FORMAT from inside the writer lock, taking the store lock
    there; rebuild takes the store lock, then waits for the writer lock: the two deadlocked.
    Now the writer asks for the store lock before the writer lock, so while a rebuild (here:
    the test) holds the store lock, the tag waits without holding the writer lock."""
    root = shutil.copytree(GOLDEN / "store-v1", tmp_path / "store")
    with deltastore.open(root) as store:
        tagged = threading.Thread(target=store.tag, args=("v1", "main"), daemon=True)
        with layout.store_lock(root):
            tagged.start()
            time.sleep(0.3)  # the tag is now blocked on the store lock
            fd = os.open(root / layout.WRITE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what rebuild takes next
            finally:
                os.close(fd)
        tagged.join(timeout=30)
        assert not tagged.is_alive()
        assert store.refs()["v1"] == ("tag", store.resolve("main"))
    assert json.loads((root / "FORMAT").read_text())["deltastore_store_format"] == 2
