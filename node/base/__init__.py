"""The node's foundations: configuration, the error root, the counter key type, threads.

Imports nothing from the rest of `node`; everything else may import it.
"""
