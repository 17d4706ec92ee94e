"""Regions and pixels: the second half of the "Modern ConvNets" lecture.

One module per noun:

- :mod:`.proposals`: Selective Search region proposals (OpenCV contrib ``ximgproc``).
- :mod:`.heads`: the rest of a classifier from a tap (what Fast R-CNN runs per region).
- :mod:`.rcnn`: R-CNN (one forward pass per region) and Fast R-CNN (one pass, then RoI pooling).
- :mod:`.roi`: RoIPool against RoIAlign for one box, bin by bin.
- :mod:`.rpn`: Faster / Mask R-CNN (torchvision) stage by stage: anchors, objectness, proposals.
- :mod:`.segment`: fully convolutional segmentation (FCN, DeepLabv3).
- :mod:`.deconv`: transposed-convolution arithmetic (Dumoulin & Visin 2016).

Long computations take ``progress(done, total)`` and ``should_stop()`` callables and raise
:class:`vizcore.regions.proposals.Stopped` when stopped.
"""
