"""Exercise 7a: the checker on a history written by hand.

Four ids published (``b`` twice). ``a`` was processed once, ``b`` twice, ``c`` never, ``d`` never
but it is in the dead letters; ``x`` was processed though nobody published it. The checker counts
``a`` processed once, ``b`` duplicated, ``c`` lost, ``d`` dead-lettered (accounted for, not lost),
``x`` unexpected, and calls the run FAILED. No service runs: this is the checker alone.
"""
from nirvana import checker

row = checker.check("orders", published=["a", "b", "b", "c", "d"], processed={"a": 1, "b": 2, "x": 1},
                    dead_lettered=["d"])
print(checker.render([row]))
