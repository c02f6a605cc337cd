"""lakehouse_utils: all job logic of the crypto streaming lakehouse (notebooks, CLI and tests call it)."""

from .config import Settings

__all__ = ["Settings"]
__version__ = "0.1.0"
