"""vizcore: what the layers of convolutional networks learn.

The engine behind the dashboard. Import submodules for capabilities:
``vizcore.models``, ``vizcore.activations``, ``vizcore.summary``, ...
"""
__version__ = "0.1.0"


def apply_speed_settings() -> None:
    """Process-wide settings that make CPU inference faster (``bench/activations.py`` measures them).

    Huge pages for large tensors cut page-fault time when many layer outputs are
    kept; flushing denormals avoids slow subnormal arithmetic (EfficientNet makes
    many). Called by the CLI and the dashboard, never on import.
    """
    import os

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read by torch's allocator when it loads
    import torch

    torch.set_flush_denormal(True)
