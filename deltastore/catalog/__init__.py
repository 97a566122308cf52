"""The catalog: an index of checkpoints, entries, chunk lists, objects and refs."""
