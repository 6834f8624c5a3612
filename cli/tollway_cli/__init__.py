"""The `tollway` command: the composition layer that wires the planes into processes.

It sits above both planes (the data plane, the operator) and the shared contract; neither plane imports it.
"""
