# Boot a role entirely from RAM: per-role kernel + an initrd that carries the
# role's closure as a squashfs. Stage 1 only mounts file systems declared in
# `fileSystems` (tmpfs root, the squashfs, an overlay for a writable store):
# no stage-1 scripts, so it works with the scripted and the systemd initrd.
{ config, lib, pkgs, modulesPath, ... }:
let
  cfg = config.nxc.ramdisk;
  systemdInitrd = config.boot.initrd.systemd.enable;
  toplevel = config.system.build.toplevel;

  squashfs = pkgs.callPackage (modulesPath + "/../lib/make-squashfs.nix") {
    storeContents = [ toplevel ];
    comp = cfg.squashfsCompression;
  };

  initrd = pkgs.makeInitrdNG {
    name = "nxc-initrd-${config.nxc.composition}-${config.nxc.role}";
    inherit (config.boot.initrd) compressor;
    prepend = [ "${config.system.build.initialRamdisk}/initrd" ];
    contents = [ { source = squashfs; target = "/nix-store.squashfs"; } ];
  };
in
{
  options.nxc.ramdisk = {
    enable = lib.mkEnableOption "booting the role from RAM (kernel + initrd carrying the closure)";
    squashfsCompression = lib.mkOption {
      type = lib.types.str;
      default = "zstd -Xcompression-level 6";
      description = "mksquashfs compression arguments for the store image inside the initrd.";
    };
    extraKernelParams = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Kernel parameters the manifest adds for this flavour (e.g. serial consoles).";
    };
  };

  config = lib.mkIf cfg.enable {
    boot.loader.grub.enable = false;

    fileSystems."/" = lib.mkImageMediaOverride {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
    };
    fileSystems."/nix/.ro-store" = lib.mkImageMediaOverride {
      fsType = "squashfs";
      # The squashfs sits at the initrd's root; the scripted stage 1 resolves
      # devices relative to its mount root, systemd's from /.
      device = if systemdInitrd then "/nix-store.squashfs" else "../nix-store.squashfs";
      options = [ "loop" ];
      neededForBoot = true;
    };
    fileSystems."/nix/.rw-store" = lib.mkImageMediaOverride {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
      neededForBoot = true;
    };
    fileSystems."/nix/store" = lib.mkImageMediaOverride {
      overlay = {
        lowerdir = [ "/nix/.ro-store" ];
        upperdir = "/nix/.rw-store/store";
        workdir = "/nix/.rw-store/work";
      };
      neededForBoot = true;
    };

    boot.initrd.availableKernelModules = [ "squashfs" "overlay" "loop" ];
    boot.initrd.kernelModules = [ "loop" "overlay" ];

    system.build.nxcSquashfsStore = squashfs;
    system.build.nxcInitrd = initrd;

    nxc.artifacts = {
      kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
      initrd = "${initrd}/initrd";
      kernel_params = toString ([ "init=${toplevel}/init" ] ++ config.boot.kernelParams ++ cfg.extraKernelParams);
      closure = "${toplevel}";
    };
  };
}
