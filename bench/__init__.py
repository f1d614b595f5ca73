"""Benchmarks: each script starts its own server on a loopback port with a fresh
database, drives a bounded load from a separate process, and prints its figures beside
a bare baseline measured in the same run."""
