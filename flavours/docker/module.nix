# docker: a per-role container image whose entry point is the NixOS stage-2
# init (systemd as PID 1). The runtime starts it with what systemd needs
# (cgroup namespace, tmpfs on /run and /tmp, --privileged for tc/netem) and
# mounts the node's input files (nxc/runtime/node_inputs.py: env, hosts,
# authorized_keys, deployment.json, hostkey) read-only at /nxc-input/: the
# agent reads them there when the kernel command line names no nxc.inputs
# (equivalently NXC_AGENT_ARGS="--inputs dir:/nxc-input" in
# /nxc-input/agent.env).
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
      Env = [ "container=docker" ];
      StopSignal = "SIGRTMIN+3";
    };
  };
in
{
  boot.isContainer = true;
  # No kernel of its own: the host's kernel must provide netem/ifb.
  boot.kernelModules = lib.mkForce [ ];
  networking.useDHCP = false;

  system.build.nxcContainer = image;

  nxc.artifacts = {
    container = {
      image = "${image}";
      tag = "${name}:${tag}";
      init = "${toplevel}/init";
    };
    closure = "${toplevel}";
  };
}
