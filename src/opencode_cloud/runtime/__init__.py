"""Where an instance's service runs: the `Runtime` seam (`base`), today's one
implementation, a container on one Docker engine (`engine`), and the place that chooses
(`choice`). The service's operations go through it for everything that happens to the
running service itself.
"""
