# The composition CI boots: one role, `node`, three of them by default.
# Roles of a selftest composition are not NixOS modules: each role's `startup`
# is a shell script the test image runs once the nxc agent has set the node up
# (hostname, /etc/hosts, addresses, /etc/nxc/env).
{ parameters, ... }:
{
  description = "selftest: nodes built from host packages that serve a file over HTTP to each other";

  parameters = {
    nodes = 3;        # default count; `nxc start -r node=N` changes it at start time
    memory_mb = 256;  # per VM
  };

  roles.node = {
    quantity = parameters.nodes;
    resources.memory_mb = parameters.memory_mb;
    startup = ''
      . /etc/nxc/env
      mkdir -p /srv/www
      echo "hello from $NXC_NODE (role $NXC_ROLE, index $NXC_INDEX)" > /srv/www/index.html
      busybox httpd -p 80 -h /srv/www
    '';
  };

  testScript = ./test.py;
}
