"""The Counters node: the aiohttp peer that serves clients and replicates counters."""

__version__ = "0.1.0"
