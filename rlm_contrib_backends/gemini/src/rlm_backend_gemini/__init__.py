"""rlm-backend-gemini."""

__version__ = "0.1.0"
