"""`python -m vqaudio` runs the command-line interface (also what torchrun launches)."""

from vqaudio.cli import main

if __name__ == "__main__":
    main()
