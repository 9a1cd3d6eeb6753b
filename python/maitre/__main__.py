"""``python -m maitre``: the maitre-serve runner; exits with its return code."""

import sys

from maitre.runner import run

if __name__ == "__main__":
    sys.exit(run())
