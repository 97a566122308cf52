"""Import files and folders as checkpoints on a branch, in their order.

Every source is checked before the first is saved, so an unsupported or
unreadable file anywhere in a folder leaves the store as it was.  Each
checkpoint is saved onto the branch, so it becomes the child of the one
before: unchanged tensors cost nothing and changed ones are stored as deltas
against their predecessor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from deltastore import refs
from deltastore.errors import ImportSourceError
from deltastore.exchange.sources import Loaded, Source, plan

if TYPE_CHECKING:
    from deltastore.store import Store


def import_into(
    store: Store,
    path: str | os.PathLike[str],
    *,
    branch: str = refs.DEFAULT_BRANCH,
    message: str | None = None,
    step: int | None = None,
) -> list[str]:
    """Save what ``path`` holds as checkpoints on ``branch``; return their ids in order.

    ``message`` and ``step`` override what the sources say about themselves
    (a deltastore export's metadata, else the file name and the number in it);
    ``step`` can only name a single checkpoint.
    """
    refs.validate_name(branch)
    sources = plan(Path(path))
    if step is not None and len(sources) > 1:
        raise ImportSourceError(
            str(path),
            f"a step names one checkpoint, and this folder holds {len(sources)} "
            "(each takes its step from the number in its name)",
        )
    if len(sources) > 1:  # a single source is checked by loading it
        for source in sources:
            source.check()
    ids = []
    with _bar(store, len(sources)) as advance:
        for source in sources:
            loaded = source.load()
            ids.append(
                store.save(
                    loaded.state,
                    _message(source, loaded, message, len(sources)),
                    step=step if step is not None else _first(loaded.step, source.step),
                    metrics=loaded.metrics,
                    branch=branch,
                )
            )
            del loaded  # a source's tensors are freed before the next one is read
            advance()
    return ids


def _message(source: Source, loaded: Loaded, given: str | None, count: int) -> str:
    if given is not None:
        return given if count == 1 else f"{given}: {source.name}"
    return loaded.message or source.name


def _first(*steps: int | None) -> int | None:
    return next((s for s in steps if s is not None), None)


@contextmanager
def _bar(store: Store, count: int) -> Iterator[Callable[[], object]]:
    """A bar over the checkpoints, as the store shows its own: on a terminal, or when forced."""
    show = store.progress
    if show is None:
        show = count > 1 and sys.stderr.isatty()
    if not show:
        yield lambda: None
        return
    with tqdm(total=count, desc="import", unit="checkpoint") as bar:
        yield lambda: bar.update(1)
