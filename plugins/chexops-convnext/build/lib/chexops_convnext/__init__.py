"""ConvNeXt-Tiny as a chexops architecture family."""
