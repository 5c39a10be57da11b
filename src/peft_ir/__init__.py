"""peft-ir: parameter-efficient tuning for information retrieval."""

__version__ = "0.1.0"
