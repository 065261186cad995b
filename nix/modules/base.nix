# What every nxc role has, whatever the flavour: ssh with the deployment's key
# and per-deployment host keys (written by the agent), the tools network
# emulation and monitoring need, and NXC_* variables in login shells.
{ config, lib, pkgs, ... }:
{
  # The agent names the node from the deployment.
  networking.hostName = lib.mkDefault "";

  # Experiment networks are isolated; a firewall would only skew results.
  networking.firewall.enable = lib.mkDefault false;

  # DHCP for the management NIC (user-mode network of VMs, Grid'5000's
  # network), never for the experiment NIC the agent configures.
  networking.useDHCP = lib.mkDefault true;
  networking.dhcpcd.denyInterfaces = [ "nxc*" ];

  # The agent rewrites /etc/hosts with every node: make it a file, not a
  # link into the store.
  environment.etc.hosts.mode = "0644";

  services.openssh = {
    enable = true;
    # Keys only: the deployment's public key goes to root's authorized_keys.
    settings.PermitRootLogin = "prohibit-password";
    settings.PasswordAuthentication = false;
    settings.KbdInteractiveAuthentication = false;
    # The agent installs the host key it gets with the deployment here before
    # sshd starts (no key baked into the image).
    hostKeys = [ { path = "/etc/ssh/ssh_host_ed25519_key"; type = "ed25519"; } ];
  };

  # Network emulation (tc with HTB, netem, u32, ifb) and measurement tools.
  boot.kernelModules = [ "sch_netem" "sch_htb" "cls_u32" "ifb" "act_mirred" ];
  environment.systemPackages = with pkgs; [ iproute2 fping iperf3 ethtool tcpdump wget curl ];

  # Metrics in the Prometheus text format on :9100.
  services.prometheus.exporters.node = {
    enable = true;
    port = 9100;
    enabledCollectors = [ "systemd" ];
  };

  # NXC_NODE, NXC_ROLE, NXC_INDEX, NXC_REPLICAS, NXC_DEPLOYMENT_ID for programs
  # started from a login shell.
  environment.extraInit = ''
    if [ -r /etc/nxc/env ]; then set -a; . /etc/nxc/env; set +a; fi
  '';

  documentation.enable = lib.mkDefault false;
  system.stateVersion = lib.mkDefault "24.11";
}
