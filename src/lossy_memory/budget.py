"""`python -m lossy_memory.budget --bits-per-example 168 --rho 1`: pick (c, l) for a bit budget (paper, Appendix B).

See ``lossy_memory.memory.budget`` for the constraints and the table printed.
"""

from lossy_memory.memory.budget import main

if __name__ == "__main__":
    main()
