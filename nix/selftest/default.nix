# One selftest role's boot artifacts, built from the *host's* packages (Debian kernel,
# busybox, iproute2, OpenSSH, kexec-tools…) for machines without nixpkgs: a kernel and
# an initrd for VMs, or a container root file system (format = "rootfs").
#
#   import ./nix/selftest {
#     name = "demo-server";                      # derivation name suffix
#     agent = ./nxc/agent/nxc-agent;             # the node agent (a path: copied to the store)
#     metrics = ./nxc/agent/nxc-metrics;         # optional: the /proc metrics sampler
#     sync = ./nxc/agent/nxc-sync;               # optional: the sync service's node command
#     role = {
#       startup = "busybox httpd -p 80 -h /srv";  # shell text run once the agent is ready
#       packages = [ "/usr/bin/socat" ];           # extra host files (with their libraries)
#       kernel_version = "6.1.0-56-amd64";         # optional; default: newest in /boot
#       aslr = false;                              # true: keep address space randomisation
#       g5k_stdenv = false;                        # true: a Grid'5000-like standard
#                                                  # environment instead of an nxc role
#     };
#     format = "initrd";                        # or "rootfs" (docker flavour)
#   }
#
# With `g5k_stdenv = true` the image is what the rehearsal testbed's nodes boot before
# nxc deploys them (nxc/testbeds/rehearsal): the same kernel, busybox, sshd and
# kexec-tools, plus sudo with a `sudo-g5k` wrapper, 9p for a shared home, and
# g5k-stdenv.sh as its init (user account, keys, site address from QEMU fw_cfg)
# instead of the nxc agent.
#
# With format "initrd", $out holds `kernel` (copy of /boot/vmlinuz-*), `initrd` (gzip'd
# newc cpio), `kernel-params` (what the runtime puts before console=… and the nxc.*
# parameters) and `info.json`. With format "rootfs", it holds `rootfs.tar` (the same
# tools and agent without kernel or modules, /init for a container: `docker import`
# it) and `info.json`. The derivation is built with /bin/sh and host tools (sandbox off):
# it is NOT reproducible (its inputs are whatever the host has installed). In an impure
# evaluation a fingerprint of the host's package database is one of its inputs, so that
# upgrading a host package rebuilds it; a pure evaluation (flakes) cannot read it.
{ system ? "x86_64-linux", name, role ? { }, agent, metrics ? null, sync ? null, format ? "initrd" }:
let
  toStr = v: if builtins.isString v then v else toString v;
  packages = map toStr (role.packages or [ ]);
  badPackage = builtins.filter (p: builtins.substring 0 1 p != "/") packages;
  startup = role.startup or "";
  dpkgStatus = /var/lib/dpkg/status;
  hostFingerprint =
    if builtins ? currentTime && builtins.pathExists dpkgStatus
    then builtins.hashFile "sha256" dpkgStatus
    else "pure-evaluation";
in
assert builtins.isString startup
  || throw "nix/selftest: role ${name}: `startup` must be shell text (a string)";
assert builtins.elem format [ "initrd" "rootfs" ]
  || throw "nix/selftest: role ${name}: unknown format '${toString format}' (initrd or rootfs)";
assert badPackage == [ ]
  || throw "nix/selftest: role ${name}: packages must be absolute paths of host files, not ${builtins.head badPackage}";
builtins.derivation {
  name = "nxc-selftest-${name}";
  inherit system;
  builder = "/bin/sh";
  args = [ ./build.sh ];
  inherit agent startup hostFingerprint format;
  metrics = if metrics == null then "" else metrics;
  sync = if sync == null then "" else sync;
  roleName = role.name or name;
  packages = builtins.concatStringsSep "\n" packages;
  kernelVersion = role.kernel_version or "";
  aslr = if role.aslr or false then "1" else "";
  g5kStdenv = if role.g5k_stdenv or false then "1" else "";
  g5kStdenvInit = ./g5k-stdenv.sh;
  PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
  # Host tools only: nothing to substitute, nothing worth sending to a remote builder.
  preferLocalBuild = true;
  allowSubstitutes = false;
}
