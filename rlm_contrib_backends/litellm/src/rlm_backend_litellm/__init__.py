"""rlm-backend-litellm."""

__version__ = "0.1.0"
