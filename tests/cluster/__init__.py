"""Tests on a real SLURM: job arrays, kills, requeues, dask-jobqueue and the cluster recipes."""
