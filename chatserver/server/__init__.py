"""The wiring: what assembles and runs the server, above the protocols and the core.

Imports go one way, wiring -> protocols -> core: this package may import every protocol and
the core; the protocols import nothing from here, and the core imports neither.
"""
