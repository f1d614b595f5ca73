"""Trainyard server: gRPC API, lifecycle domain, store and runtime."""

__version__ = "0.1.0"
