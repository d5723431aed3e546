"""Thin kfp v2 components, one per pipeline stage. Each calls a stage function of isnetflow."""
