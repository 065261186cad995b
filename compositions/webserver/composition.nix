# An nginx server and N clients that fetch its page by name.
{ parameters, ... }:
{
  description = "webserver: nginx and clients checking it";

  parameters = {
    clients = 2;
    message = "hello from nxc";
  };

  roles = {
    server = { pkgs, ... }: {
      services.nginx = {
        enable = true;
        virtualHosts.default = {
          default = true;
          root = pkgs.writeTextDir "index.html" parameters.message;
        };
      };
    };

    client = {
      quantity = parameters.clients;
      module = { pkgs, ... }: {
        environment.systemPackages = [ pkgs.curl ];
      };
    };
  };

  testScript = ./test.py;
}
