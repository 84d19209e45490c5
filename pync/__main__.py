"""``python -m pync``: the same as the ``pync`` command."""

from .cli import main

if __name__ == "__main__":
    main()
