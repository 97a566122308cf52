"""Where encoded objects live: an interface and its backends."""

from deltastore.objects.base import ObjectStore
from deltastore.objects.local import LocalObjectStore

__all__ = ["LocalObjectStore", "ObjectStore"]
