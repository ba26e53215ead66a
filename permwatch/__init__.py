"""permwatch's shared core: the wire contract, the transports, config and the CLI that wires the stages."""

__version__ = "0.1.0"
