"""Exercise 6a: the race of scenario 1 with 50 ids instead of 20, with the kit's claims.

Predict, then check: two replicas get the two copies of each id side by side. Whoever claims an
id first processes it; the other copy finds the claim (or the done mark) and is skipped or waits.
However the copies meet, every id is processed once: 50 processed, 0 double effects.
"""
from nirvana import designs

more_copies = designs.replicas_race("claims", ids=50)
print(f"{more_copies.ids} ids published twice: processed {more_copies.processed} times, "
      f"double effects {more_copies.double}")
