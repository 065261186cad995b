# nxc's version, read from the Python package so there is one source of truth.
let
  file = ../../nxc/__init__.py;
  m = if builtins.pathExists file then builtins.match ''.*__version__ = "([^"]+)".*'' (builtins.readFile file) else null;
in
if m == null then "unknown" else builtins.head m
