"""docker: one container per node, on a per-deployment network of a Docker daemon.

The daemon is the user's (``DOCKER_HOST`` or the default socket) or a private one nxc
starts in its own network namespace (``--dockerd private``). Everything goes through
the Docker SDK for Python: images, networks, containers, ``exec`` and the archive API.
"""
