"""Tests of lmstack.generate (a package, so module names do not clash with other stages' tests)."""
