"""The engine-facing core: the client, engine data, the container spec, volumes, container
lifecycle, helper containers, images and readiness. It knows nothing of the command line
or the configuration file; docs/architecture.md shows how the modules depend on each
other.
"""
