"""mailsuite: an all-in-one mail and directory server on Twisted."""

__version__ = "0.1.0"
