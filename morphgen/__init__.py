"""morphgen: face-recognition training data from 3D Morphable Models."""
__version__ = "0.1.0"
