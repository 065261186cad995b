# docker: a per-role container image whose entry point is the NixOS stage-2 init
# (systemd as PID 1), loaded by the runtime (nxc/flavours/docker) with `docker load`
# once per store path.
#
# What the runtime gives every container (systemd as PID 1 needs the first three
# before it starts): tmpfs on /run, /run/lock and /tmp; a private cgroup namespace
# and, for NixOS roles, --privileged (a writable cgroup; `--privileged no` to try
# without); a TTY as /dev/console (the container's log, where the agent's ready line
# goes); `container=docker` in the environment; the node's input files
# (nxc/runtime/node_inputs.py: env, hosts, authorized_keys, deployment.json, hostkey)
# read-only at /nxc-input, which the agent reads when the kernel command line names no
# nxc.inputs, and agent.env (NXC_AGENT_ARGS="--cmdline -": the kernel command line is
# the host's), which the agent unit reads (nix/modules/agent.nix).
#
# Checked against nixpkgs' own container modules (virtualisation/docker-image.nix,
# virtualisation/container-config.nix, profiles/docker-container.nix); not booted here:
# the machines nxc is tested on have no nixpkgs (see flavours/docker/README.md).
{ config, lib, pkgs, ... }:
let
  toplevel = config.system.build.toplevel;
  name = "nxc-${config.nxc.composition}-${config.nxc.role}";
  tag = "nxc";
  image = pkgs.dockerTools.buildLayeredImage {
    inherit name tag;
    contents = [ ];
    config = {
      Cmd = [ "${toplevel}/init" ];
      # systemd detects the container manager from `container`; `docker exec` finds
      # the system's tools on this PATH.
      Env = [
        "container=docker"
        "PATH=/run/wrappers/bin:/run/current-system/sw/bin:/usr/bin:/bin"
      ];
      # systemd powers off on SIGRTMIN+3 (docker stop).
      StopSignal = "SIGRTMIN+3";
    };
  };
in
{
  boot.isContainer = true;
  # No kernel of its own: the host's kernel must provide netem/ifb.
  boot.kernelModules = lib.mkForce [ ];
  networking.useDHCP = false;

  # boot.isContainer makes sshd socket-activated (container-config.nix): the agent's
  # Before=sshd.service would then order nothing, and a connection arriving before the
  # agent installed the deployment's host key would get a generated one. nixpkgs'
  # docker image turns it off for the same reason.
  services.openssh.startWhenNeeded = false;

  # As nixpkgs' docker-image.nix: tell systemd and programs what runs them.
  boot.postBootCommands = ''
    echo docker > /run/systemd/container
  '';

  # Docker bind-mounts /etc/hosts: NixOS's activation would try to rename a copy over
  # it and fail ("could not create target /etc/hosts"); the agent writes it in place,
  # with every node of the deployment.
  environment.etc.hosts.enable = false;

  system.build.nxcContainer = image;

  nxc.artifacts = {
    container = {
      image = "${image}";
      format = "docker-archive";
      tag = "${name}:${tag}";
      init = "${toplevel}/init";
      stop_signal = "SIGRTMIN+3";
    };
    closure = "${toplevel}";
  };
}
