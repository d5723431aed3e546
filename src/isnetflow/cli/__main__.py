"""``python -m isnetflow.cli``: what torchrun starts in every worker (``torchrun -m isnetflow.cli train``)."""

from isnetflow.cli import main

main()
