"""Built-in sample photographs: the ones scikit-image ships inside its package.

No third-party image is committed to this repository; these files are part of
an installed dependency.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

# name -> (file in skimage/data, short caption)
SAMPLES: dict[str, tuple[str, str]] = {
    "cat": ("chelsea.png", "Chelsea the cat"),
    "coffee": ("coffee.png", "a cup of coffee"),
    "astronaut": ("astronaut.png", "astronaut Eileen Collins"),
    "rocket": ("rocket.jpg", "a rocket on the launch pad"),
    "motorcycle": ("motorcycle_left.png", "a motorcycle"),
    "horse": ("horse.png", "a horse silhouette"),
    "coins": ("coins.png", "coins (greyscale)"),
    "camera": ("camera.png", "cameraman (greyscale)"),
    "brick": ("brick.png", "brick texture"),
    "grass": ("grass.png", "grass texture"),
}


def _data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def sample_names() -> list[str]:
    """Names of the sample images present in this install."""
    d = _data_dir()
    return [n for n, (f, _) in SAMPLES.items() if (d / f).is_file()]


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; choose from {', '.join(SAMPLES)}")
    p = _data_dir() / SAMPLES[name][0]
    if not p.is_file():
        raise FileNotFoundError(f"sample {name!r} is not in this scikit-image install ({p})")
    return p


def load_sample(name: str) -> Image.Image:
    from vizcore.data.images import load_image

    return load_image(sample_path(name))
