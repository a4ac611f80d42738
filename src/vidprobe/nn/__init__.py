"""Shared network parts (layer 0: imports only torch and this package).

One module per concept, in the manner of VGGT's ``vggt/layers`` and
``vggt/heads`` files. The probe (:mod:`vidprobe.probe`) and the own backbone
implementations (VGGT, Fast3R, V-JEPA, Open-Sora's MMDiT in
:mod:`vidprobe.backbones`) build their networks from these; parameter names
are the official checkpoints' (VGGT-1B, Fast3R, V-JEPA), so those load
strictly (``tests/fixtures/*_keys.json``).

- :mod:`~vidprobe.nn.vit`: ``Mlp``, ``LayerScale``, ``Attention`` (QK-norm,
  RoPE), the pre-norm ``Block``.
- :mod:`~vidprobe.nn.rope`: 2D RoPE on (row, column) positions, the axial
  rotate-half RoPE of Open-Sora, token grid positions.
- :mod:`~vidprobe.nn.pos_embed`: fixed sin/cos tables (1D, 3D, the DPT's
  uv-grid embedding).
- :mod:`~vidprobe.nn.patch_embed`: the conv patch embedding (2D, or 3D with a
  tubelet).
- :mod:`~vidprobe.nn.dpt`: residual conv unit, fusion block, the DPT head.
- :mod:`~vidprobe.nn.camera_head`: VGGT's iterative camera head.

Copies that a numerical detail forces are marked ``# Copied from
vidprobe.nn.<module>.<name> (<why>)``; ``tests/test_nn_copies.py`` checks that
each agrees with its original.
"""
