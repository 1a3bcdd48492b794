"""Rendering: cameras, rasterizers, interpolation, shading, backgrounds."""
