"""Benchmarks: each module starts its own server on a loopback port with a fresh
temporary database, bounds its own run time and prints its figures."""
