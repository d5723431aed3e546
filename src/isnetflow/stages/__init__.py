"""Stage functions: the only layer that does I/O and tracking.

Each module exposes ``run(cfg, ...)``, called by the CLI and by the pipeline tasks
(:mod:`isnetflow.tasks`, which the kfp components call). Domain logic lives in the other subpackages and
is pure where possible. A stage never imports another stage: what two stages share lives below them
(``tests/unit/test_package.py`` checks this); a task that runs several stages is in
:mod:`isnetflow.tasks`.
"""
