"""``mx.metal``: Apple's GPU API, never available on Linux (kept so that MLX programs that ask can run)."""


__all__ = ["is_available"]


def is_available() -> bool:
    """Whether a Metal GPU is available: never, on the machines umx runs on."""
    return False
