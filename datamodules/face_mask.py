"""Face masks: the course's ``image/mask`` and ``image/nomask`` folders of 160x160 photos."""

from datamodules.folder import ImageFolder


class FaceMask(ImageFolder):
    """The course set has 91 files that duplicate another file byte for byte; the split keeps every copy
    on one side, so validation accuracy is measured on images the network never trained on."""

    task = "mask"
    source = "the course's face-mask set (folders image/mask and image/nomask)"
