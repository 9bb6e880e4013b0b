"""``python -m kaggle_qa.assistant "question" …`` is ``kaggle-qa ask "question" …``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["ask", *sys.argv[1:]]))
