"""``python -m maitre``: the maitre-serve runner; exits with its return code."""

import sys

from maitre.runner import run

if __name__ == "__main__":
    # The program is named as it was run, in --help and error messages.
    sys.exit(run(["python -m maitre"] + sys.argv[1:]))
