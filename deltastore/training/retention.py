"""The keep policy, where the training loop first had it; it lives in :mod:`deltastore.retention`.

``Store.forget`` applies the same policy to a whole store, so it moved out of
the training package; these names stay importable from here.
"""

from deltastore.retention import Candidate, KeepPolicy, Retained, rank_best, select

__all__ = ["Candidate", "KeepPolicy", "Retained", "rank_best", "select"]
