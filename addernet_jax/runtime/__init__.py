"""Shared runtime used by training, conversion and evaluation alike: the device mesh and the
checkpoint formats (model checkpoints, and read-only access to training workdirs).

It sits below `convert/`, `tasks/` and `training/` so that none of them imports another for
these pieces.
"""
