"""Deterministic synthetic demo federations: hospital, insurer and bureau; or N hospitals."""

from sqlmpc.demo.generate import generate, generate_horizontal

__all__ = ["generate", "generate_horizontal"]
