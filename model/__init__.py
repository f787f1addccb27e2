"""apprank's leaf package: feature schema and encoder (numpy only), bundle I/O, nets and ONNX export.

``model.nets`` and ``model.export`` import torch; everything else here runs with numpy alone.
"""

__version__ = "0.1.0"
