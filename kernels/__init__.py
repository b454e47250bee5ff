"""Kernels: plain-torch references (``reference``) and Triton kernels (``gfx906``).

Importing this package never imports triton and never touches a GPU.
"""
