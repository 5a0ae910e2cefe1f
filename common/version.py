"""The project's version: setup.py reads it and every command line prints it with --version."""

VERSION = "0.1.0"
