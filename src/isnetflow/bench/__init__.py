"""``isnetflow bench ...``: measured speed figures, printed as JSON (never asserted in unit tests)."""
