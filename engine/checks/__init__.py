"""Checks that read a job's data and weight files before a GPU is touched, torch-free: ``wanlora validate``,
the daemon's intake checker process and the wizard run them (they sit above ``data/`` and ``model/``)."""
