# The smallest composition: one role, `node`, with a tool added to it.
{ parameters, ... }:
{
  description = "basic: one NixOS role";

  parameters = {
    nodes = 1;
  };

  roles.node = {
    quantity = parameters.nodes;
    resources = { memory_mb = 1024; cpus = 1; };
    module = { pkgs, ... }: {
      environment.systemPackages = [ pkgs.htop ];
    };
  };

  testScript = ./test.py;
}
