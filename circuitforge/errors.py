"""The one error type circuitforge raises for bad input.

The CLI turns a :class:`CircuitForgeError` into a one-line message on stderr and exit code 2.
"""


class CircuitForgeError(Exception):
    """Bad input: a spec that cannot be loaded, a malformed task row, an existing output folder..."""
