"""vidprobe: how much 3D does a frozen video foundation model encode?"""

__version__ = "0.1.0"
