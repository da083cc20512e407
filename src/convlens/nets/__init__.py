"""Built-in architectures.

Each factory returns an ``nn.Module``; :data:`ARCHITECTURES` maps a name to a
factory and the input spec the architecture expects by default.
"""

from convlens.nets._registry import ARCHITECTURES, Architecture, build_architecture, parse_arch

__all__ = ["ARCHITECTURES", "Architecture", "build_architecture", "parse_arch"]
