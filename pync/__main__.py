"""``python -m pync``: the same as the ``pync`` command."""

from .cli.run import main

if __name__ == "__main__":
    main()
