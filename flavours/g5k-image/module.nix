# g5k-image: a per-role image tarball deployed by Kadeploy, plus the fields of
# its environment description (kernel, initrd, kernel_params, relative to the
# deployed partition). The image carries the ramdisk kernel + initrd under
# /boot: Kadeploy writes and boots them, the role starts in its bootstrap mode
# (nxc.bootstrap=kadeploy: the node's own host key and Kadeploy's authorized_keys
# from the deployed partition, sshd), and nxc hands it its inputs by kexec, as
# with g5k-ramdisk. Nothing depends on the partition's device name or label and
# no stage-1 script is needed; the partition stays free for the experiment.
#
# Firmware: as for g5k-ramdisk, off by default (nxc.g5k.firmware = true; turns
# it on). The kernel file keeps its architecture's name (bzImage, Image).
{ config, lib, pkgs, ... }:
let
  ramdisk = config.system.build.nxcInitrd;
  kernelFile = config.system.boot.loader.kernelFile;
  kernel = "${config.system.build.kernel}/${kernelFile}";
  params = toString ([ "init=${config.system.build.toplevel}/init" ] ++ config.boot.kernelParams ++ config.nxc.ramdisk.extraKernelParams);
  tarball = pkgs.runCommand "nxc-g5k-image-${config.nxc.composition}-${config.nxc.role}" { } ''
    mkdir -p tree/boot $out
    cp ${kernel} tree/boot/${kernelFile}
    cp ${ramdisk}/initrd tree/boot/initrd
    printf '%s\n' ${lib.escapeShellArg params} > tree/boot/kernel_params
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C tree -cf - . | gzip -9n > $out/image.tar.gz
  '';
in
{
  options.nxc.g5k.firmware = lib.mkOption {
    type = lib.types.bool;
    default = false;
    description = "Include redistributable firmware (for NICs that need it; makes the initrd much larger).";
  };

  config = {
    nxc.ramdisk.enable = true;
    nxc.ramdisk.extraKernelParams = [ "console=tty0" "console=ttyS0,115200n8" ];
    hardware.enableRedistributableFirmware = lib.mkDefault config.nxc.g5k.firmware;
    networking.useDHCP = true;
    # nxc kexecs the bootstrapped node into its inputs.
    environment.systemPackages = [ pkgs.kexec-tools ];

    system.build.nxcImage = tarball;

    nxc.artifacts = lib.mkForce {
      kernel = kernel;
      initrd = "${ramdisk}/initrd";
      kernel_params = params;
      image = {
        file = "${tarball}/image.tar.gz";
        kind = "tar";
        compression = "gzip";
        kernel = "/boot/${kernelFile}";
        initrd = "/boot/initrd";
        kernel_params = params;
      };
      closure = "${config.system.build.toplevel}";
    };
  };
}
