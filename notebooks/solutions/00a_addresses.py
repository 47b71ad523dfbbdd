"""Exercise 0a: one line per component of the stack, with the address it answers on.

Each row of ``stack.status()`` has ``name``, ``address``, ``state``, ``origin`` and ``log``.
"""
from nirvana import stack

for row in stack.status():
    print(f"{row.name:13} {row.address}")
