"""kfp v2 pipeline definitions and the local (kfp.local) runner behind ``isnetflow run``."""
