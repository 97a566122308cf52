"""deltastore's benchmark suite: real checkpoint sequences, deltastore and its peers side by side.

Run ``python benchmarks/run.py [--quick]`` (see benchmarks/README.md).  The modules here are
independent of deltastore's internals on purpose: they use only its public API, so the suite
measures and checks deltastore the way a user would meet it.
"""
