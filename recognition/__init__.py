"""Training and evaluation of face-recognition models on morphgen data and real data."""
