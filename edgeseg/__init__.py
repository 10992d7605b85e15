"""edgeseg: MobileNet-based segmenters from training recipe to phone-ready files."""
__version__ = "0.1.0"
