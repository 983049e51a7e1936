"""reluswap: the command-line entry point over the converters library, the worker and the service."""

__version__ = "0.1.0"
