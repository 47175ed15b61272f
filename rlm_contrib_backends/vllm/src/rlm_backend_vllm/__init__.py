"""rlm-backend-vllm."""

__version__ = "0.1.0"
