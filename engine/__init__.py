"""gen404 engine: prompt -> 3D Gaussians by score distillation.

Importing this package must stay cheap and torch-free: the console imports torch-free
modules from here (presets, splats, gate, formats) and must never pull torch in.
"""
