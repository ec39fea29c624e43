"""``python -m nea``: the same as the ``nea`` command."""

from nea.cli import main

if __name__ == "__main__":
    main()
