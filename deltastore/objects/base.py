"""The object-store interface: where encoded objects live, named by their id.

Objects are immutable and written put-if-absent (DESIGN.md invariant 2), so a
backend needs no locking of its own: writing an id that exists is a no-op.
The local directory is the first backend; an S3-compatible one plugs in here
without touching the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence

#: Anything a vectored write takes: the pieces of one object, in order.
Buffer = bytes | bytearray | memoryview


class ObjectStore(ABC):
    """Immutable, content-addressed blobs.  Implementations must be thread-safe."""

    @abstractmethod
    def get(self, object_id: str) -> bytes:
        """The object's bytes; CorruptObjectError if it is missing."""

    @abstractmethod
    def put_if_absent(self, object_id: str, data: bytes) -> int:
        """Store ``data`` under ``object_id`` unless it exists; return bytes written (0 if it did).

        The write may complete in the background: only after :meth:`flush`
        returns is every object put before it durable and readable.
        """

    def put_parts(self, object_id: str, parts: Sequence[Buffer]) -> int:
        """:meth:`put_if_absent` of the concatenation of ``parts``.

        The parts are read before this returns (the caller may reuse them);
        backends that can write them without joining them first should.
        """
        return self.put_if_absent(object_id, b"".join(parts))

    def get_into(self, object_id: str, buffer: Callable[[int], memoryview]) -> memoryview:
        """The object's bytes, in memory that ``buffer(size)`` provides when the backend can.

        A restore passes per-thread buffers it reuses: fresh ~1 MiB allocations
        page-fault, which costs as much as decoding.  CorruptObjectError if missing.
        """
        return memoryview(self.get(object_id))

    def read_head(self, object_id: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (its header); backends may read less."""
        return self.get(object_id)[:size]

    @abstractmethod
    def exists(self, object_id: str) -> bool:
        """True when the object is stored."""

    def adopt(self, object_id: str) -> bool:
        """:meth:`exists`, for a writer that will name the object in its next commit.

        The object may have been left by a writer that died, or be another's
        still in flight, so its name may not be durable yet: a backend makes it
        durable by the next :meth:`flush`, as if this writer had put it.
        """
        return self.exists(object_id)

    def put_by_others(self, object_ids: Collection[str]) -> set[str]:
        """Of ``object_ids``, put here and flushed, those another writer had stored first.

        A put never replaces an object that exists, so the stored object of
        such an id may encode the same content otherwise (another base,
        another codec) than what this writer put: a caller that recorded what
        it encoded reads those back.  A backend that cannot tell answers all
        of them, which is always safe.
        """
        return set(object_ids)

    @abstractmethod
    def size(self, object_id: str) -> int:
        """Stored size in bytes; CorruptObjectError if missing."""

    @abstractmethod
    def delete(self, object_id: str) -> None:
        """Remove an object (gc only); a missing object is not an error."""

    @abstractmethod
    def iter_ids(self) -> Iterator[str]:
        """Every stored object id, in no particular order."""

    @abstractmethod
    def flush(self) -> None:
        """Make every object put so far durable and visible (the barrier before a commit).

        Raises the first error any pending write met.
        """

    def iter_temporaries(self) -> Iterator[tuple[str, int]]:
        """Names and sizes of partial writes a dead writer left (backends without any: none).

        Only gc calls this, while no writer runs (``layout.collecting``).
        """
        return iter(())

    def delete_temporary(self, name: str) -> None:  # noqa: B027 - optional, like the above
        """Remove one of :meth:`iter_temporaries`; a missing one is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release background resources."""
