# N servers form a ring using the node list every node has
# (/etc/nxc/deployment.json): server i links to server i+1, the last to the
# first. A token sent by a client travels the ring twice. Clients start only
# once every server reported its link up: each server signals `ring-connected`
# on the deployment's sync service, and the client role declares
# `start_after` that state signalled by every server (no driver involved).
{ parameters, ... }:
let
  ringPort = 7000;
  common = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.socat pkgs.jq ];
  };
  # The next server in the ring, from the deployment (works for any -r server=N).
  nextServer = pkgs: pkgs.writeShellScript "ring-next" ''
    . /etc/nxc/env
    n=$(${pkgs.jq}/bin/jq '[.nodes[] | select(.role == "server")] | length' /etc/nxc/deployment.json)
    echo "server$(( NXC_INDEX % n + 1 ))"
  '';
in
{
  description = "ring: servers in a ring, clients started once it is connected";

  parameters = {
    servers = 4;
    clients = 1;
  };

  roles = {
    server = {
      quantity = parameters.servers;
      module = { pkgs, ... }: {
        imports = [ common ];
        # Forward "<hops> <path…>" to the next server, appending our name.
        systemd.services.ring-server = {
          wantedBy = [ "multi-user.target" ];
          after = [ "nxc-agent.service" ];
          requires = [ "nxc-agent.service" ];
          path = [ pkgs.socat pkgs.coreutils ];
          script = ''
            exec socat TCP-LISTEN:${toString ringPort},reuseaddr,fork SYSTEM:${pkgs.writeShellScript "ring-hop" ''
              read -r hops path
              path="$path $(cat /etc/nxc/node)"
              if [ "$hops" -le 1 ]; then echo "$path"
              else echo "$((hops - 1)) $path" | ${pkgs.socat}/bin/socat -t 30 - TCP:$(${nextServer pkgs}):${toString ringPort}
              fi
            ''}
          '';
        };
        # Report "connected" once the next server answers.
        systemd.services.ring-link = {
          wantedBy = [ "multi-user.target" ];
          after = [ "ring-server.service" ];
          path = [ pkgs.socat pkgs.coreutils ];
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = ''
            next=$(${nextServer pkgs})
            until socat -u /dev/null TCP:$next:${toString ringPort},connect-timeout=2; do sleep 1; done
            mkdir -p /run/ring && echo "$next" > /run/ring/connected
            /run/current-system/sw/bin/nxc-sync signal ring-connected
          '';
        };
      };
    };

    client = {
      quantity = parameters.clients;
      # The agent waits until every server (however many `-r server=N` made)
      # signalled ring-connected before the role's units that order after
      # nxc-start-after.service start.
      start_after = { state = "ring-connected"; count = "server"; timeout = 600; };
      module = { pkgs, ... }: {
        imports = [ common ];
        systemd.services.ring-client = {
          wantedBy = [ "multi-user.target" ];
          after = [ "nxc-start-after.service" ];
          requires = [ "nxc-start-after.service" ];
          path = [ pkgs.socat pkgs.jq pkgs.coreutils ];
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = ''
            n=$(jq '[.nodes[] | select(.role == "server")] | length' /etc/nxc/deployment.json)
            mkdir -p /run/ring
            echo "$((2 * n))" | socat -t 60 - TCP:server1:${toString ringPort} > /run/ring/result
          '';
        };
      };
    };
  };

  testScript = ./test.py;
}
