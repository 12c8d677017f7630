"""aftercare: timed aftercare messages for patients between mesotherapy sessions."""

__version__ = "0.1.0"
