"""Image I/O, built-in samples, datasets and the cue-conflict stimuli."""
from vizcore.data.images import ImageLoadError, load_image, to_rgb
from vizcore.data.samples import SAMPLES, load_sample, sample_names, sample_path

__all__ = ["ImageLoadError", "SAMPLES", "load_image", "load_sample", "sample_names", "sample_path", "to_rgb"]
from vizcore.data.datasets import (  # noqa: E402
    BatchReport,
    ImageDataset,
    ImageItem,
    cue_conflict_dataset,
    file_list,
    image_folder,
    image_list,
    iter_batches,
    open_dataset,
    samples_dataset,
    torchvision_dataset,
)

__all__ += [
    "BatchReport", "ImageDataset", "ImageItem", "cue_conflict_dataset", "file_list", "image_folder",
    "image_list", "iter_batches", "open_dataset", "samples_dataset", "torchvision_dataset",
]
from vizcore.data.stimuli import (  # noqa: E402
    SUBSET_FOLDERS,
    StimuliError,
    default_stimuli_dir,
    download_stimuli,
    locate_stimuli,
    stimuli_digest,
)

from vizcore.data import imagenet_samples  # noqa: E402,F401 - registers the `imagenet-samples` spec

__all__ += ["SUBSET_FOLDERS", "StimuliError", "default_stimuli_dir", "download_stimuli", "locate_stimuli",
            "stimuli_digest"]
