"""The test suite as a package, so that its shared helpers import by package path (``tests._configs``,
``tests._ports``, ``tests.deploy.manifests``, ...). The folders below have no ``__init__.py``: pytest imports
each test file by its base name (keep test file names unique across folders)."""
