# The nxc agent as a systemd unit: contextualisation from the node's input
# files (rendered by nxc on the host: env, hosts, authorized_keys,
# deployment.json, hostkey) in stage 2 (never in stage 1), backdoor shell on a
# virtio console for VMs, readiness line with the boot id on the console.
{ config, lib, pkgs, ... }:
let
  cfg = config.nxc.agent;
  agent = pkgs.runCommand "nxc-agent" { } ''
    install -Dm755 ${cfg.source} $out/bin/nxc-agent
    patchShebangs $out/bin/nxc-agent
  '';
  metrics = pkgs.runCommand "nxc-metrics" { } ''
    install -Dm755 ${cfg.metricsSource} $out/bin/nxc-metrics
    patchShebangs $out/bin/nxc-metrics
  '';
  # The driver scrapes node_exporter when it answers on :9100, else nxc-metrics.
  needsSampler = cfg.metricsSource != null && !config.services.prometheus.exporters.node.enable;
  # nxc-sync with busybox's nc (it keeps the connection open until the server
  # closes it) and the few tools it calls.
  sync = pkgs.runCommand "nxc-sync" { } ''
    install -Dm755 ${cfg.syncSource} $out/libexec/nxc-sync
    patchShebangs $out/libexec/nxc-sync
    cat > $out/bin/nxc-sync <<EOF
    #!${pkgs.runtimeShell}
    export NXC_SYNC_NC=\''${NXC_SYNC_NC:-${pkgs.busybox}/bin/nc}
    export PATH=\$PATH:${lib.makeBinPath [ pkgs.coreutils pkgs.gnused pkgs.gawk pkgs.hostname ]}
    exec $out/libexec/nxc-sync "\$@"
    EOF
    chmod 755 $out/bin/nxc-sync
  '';
in
{
  options.nxc.agent = {
    enable = lib.mkEnableOption "the nxc agent (sets the node up from the deployment)" // { default = true; };
    source = lib.mkOption {
      type = lib.types.path;
      description = "The agent script (nxc/agent/nxc-agent in the nxc source).";
    };
    metricsSource = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "The nxc-metrics sampler (nxc/agent/nxc-metrics), installed when the role runs no node_exporter.";
    };
    syncSource = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "The sync service's node command (nxc/agent/nxc-sync in the nxc source).";
    };
    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Arguments added to the agent's command line (e.g. --inputs dir:/…).";
    };
  };

  config = lib.mkIf cfg.enable {
    # awk is all nxc-metrics needs besides sh.
    environment.systemPackages = lib.optionals needsSampler [ metrics pkgs.gawk ]
      ++ lib.optional (cfg.syncSource != null) sync;

    # Registers the node with the sync service (discovery), then waits for the
    # role's start_after conditions: units of a role with start_after order
    # themselves `after` and `requires` this one.
    systemd.services.nxc-start-after = lib.mkIf (cfg.syncSource != null) {
      description = "nxc: announce this node and wait for the role's start_after";
      wantedBy = [ "multi-user.target" ];
      after = [ "nxc-agent.service" "network-online.target" ];
      wants = [ "network-online.target" ];
      requires = [ "nxc-agent.service" ];
      unitConfig.ConditionPathExists = "/etc/nxc/sync";
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = [ "${sync}/bin/nxc-sync announce" "${sync}/bin/nxc-sync start-after" ];
        StandardOutput = "journal+console";
        StandardError = "journal+console";
        TimeoutStartSec = "infinity";
      };
    };
    systemd.services.nxc-agent = {
      description = "nxc agent: set this node up from the deployment";
      wantedBy = [ "multi-user.target" ];
      # Name and address the experiment NIC before DHCP looks at interfaces,
      # and install the deployment's keys before sshd reads them.
      before = [ "network-pre.target" "dhcpcd.service" "sshd.service" "multi-user.target" ];
      wants = [ "network-pre.target" ];
      after = [ "systemd-udevd.service" "systemd-modules-load.service" "local-fs.target" ];
      path = with pkgs; [ coreutils util-linux iproute2 gnugrep gnused gawk kmod openssh procps findutils curl ];
      serviceConfig = {
        Type = "oneshot";
        # The backdoor keeps running in this unit's cgroup after the agent's
        # set-up is done.
        RemainAfterExit = true;
        # Where the inputs are: nxc.inputs= on the kernel command line (VMs:
        # fw_cfg files; Grid'5000: a directory or URL); with none, the agent reads
        # /nxc-input/ when it exists (docker mounts the node's input files there).
        # /nxc-input/agent.env may still add arguments (NXC_AGENT_ARGS="…").
        EnvironmentFile = "-/nxc-input/agent.env";
        # `up`: set the node up and print the ready line. sshd is a NixOS
        # service here, so the agent only installs the keys (host key at
        # /etc/ssh/ssh_host_ed25519_key, see base.nix); DHCP is dhcpcd's job.
        ExecStart = "${agent}/bin/nxc-agent up --sshd none --mgmt none ${lib.escapeShellArgs cfg.extraArgs} $NXC_AGENT_ARGS";
        StandardOutput = "journal+console";
        StandardError = "journal+console";
        TimeoutStartSec = "5min";
      };
    };
  };
}
