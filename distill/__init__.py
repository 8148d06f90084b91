"""distill: train small language models by knowledge distillation, BabyLM-style."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Student", "__version__"]


def __getattr__(name: str):
    # Importing torch and transformers takes seconds; `import distill` stays light until needed.
    if name == "Student":
        from distill.student import Student

        return Student
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
