"""lossy_memory: lossy experience storage for deep lifelong learning."""

__version__ = "0.1.0"
