"""Mesa agent-based what-if experiments on the federation, driven by real traces."""

__all__: list[str] = []
