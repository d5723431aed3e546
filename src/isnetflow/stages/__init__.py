"""Stage functions: the only layer that does I/O and tracking.

Each module exposes ``run(cfg, ...)``, called identically by the CLI, the kfp components and the
local pipeline run. Domain logic lives in the other subpackages and is pure where possible.
"""
