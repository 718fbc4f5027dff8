"""The contracts between stages: Arrow schemas, typed records and their validators.

`pipeline/` and `trainer/` both import this package and never each other; the files
these schemas describe are the only thing the two sides share.
"""
