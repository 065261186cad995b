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
    loadStoreDb = lib.mkOption {
      type = lib.types.bool;
      default = config.nix.enable;
      defaultText = lib.literalExpression "config.nix.enable";
      description = ''
        Register the closure in the node's Nix database at boot (`nix-store --load-db`
        from the registration the squashfs carries, as nixpkgs' netboot module does).
        Without it nix on the node sees an empty store, and a garbage collection there
        deletes the running system.
      '';
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

    # make-squashfs puts the closure's registration at the squashfs root, that is
    # /nix/store/nix-path-registration once the overlay is mounted.
    boot.postBootCommands = lib.mkIf cfg.loadStoreDb ''
      if [ -f /nix/store/nix-path-registration ]; then
        ${config.nix.package.out}/bin/nix-store --load-db < /nix/store/nix-path-registration
        touch /etc/NIXOS
        ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
      fi
    '';

    system.build.nxcSquashfsStore = squashfs;
    system.build.nxcInitrd = initrd;

    # The kernel file is named by architecture (bzImage on x86_64, Image on aarch64).
    nxc.artifacts = {
      kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
      initrd = "${initrd}/initrd";
      kernel_params = toString ([ "init=${toplevel}/init" ] ++ config.boot.kernelParams ++ cfg.extraKernelParams);
      closure = "${toplevel}";
    };
  };
}
