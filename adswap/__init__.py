"""`adswap`: the command-line front of the pipeline and trainer packages."""
