"""rlm-backend-portkey."""

__version__ = "0.1.0"
