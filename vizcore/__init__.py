"""vizcore: what the layers of convolutional networks learn.

The engine behind the dashboard. Import submodules for capabilities:
``vizcore.models``, ``vizcore.activations``, ``vizcore.summary``, ...
"""
__version__ = "0.1.0"
