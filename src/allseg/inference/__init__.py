"""Inference helpers: scale estimation and tiled prediction over large images."""
