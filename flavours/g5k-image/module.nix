# g5k-image: a per-role image tarball deployed by Kadeploy, plus the fields of
# its environment description (kernel, initrd, kernel_params, relative to the
# deployed partition). The image carries the ramdisk kernel + initrd under
# /boot: Kadeploy writes and boots them, and the role runs from RAM as with
# g5k-ramdisk, so nothing depends on the partition's device name or label and
# no stage-1 script is needed. The partition stays free for the experiment's
# data (mount it from the role if needed).
{ config, lib, pkgs, ... }:
let
  ramdisk = config.system.build.nxcInitrd;
  kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
  params = toString ([ "init=${config.system.build.toplevel}/init" ] ++ config.boot.kernelParams ++ config.nxc.ramdisk.extraKernelParams);
  tarball = pkgs.runCommand "nxc-g5k-image-${config.nxc.composition}-${config.nxc.role}" { } ''
    mkdir -p tree/boot $out
    cp ${kernel} tree/boot/bzImage
    cp ${ramdisk}/initrd tree/boot/initrd
    printf '%s\n' ${lib.escapeShellArg params} > tree/boot/kernel_params
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C tree -cf - . | gzip -9n > $out/image.tar.gz
  '';
in
{
  nxc.ramdisk.enable = true;
  nxc.ramdisk.extraKernelParams = [ "console=tty0" "console=ttyS0,115200n8" ];
  hardware.enableRedistributableFirmware = lib.mkDefault true;
  networking.useDHCP = true;

  system.build.nxcImage = tarball;

  nxc.artifacts = lib.mkForce {
    image = {
      file = "${tarball}/image.tar.gz";
      kind = "tar";
      compression = "gzip";
      kernel = "/boot/bzImage";
      initrd = "/boot/initrd";
      kernel_params = params;
    };
    closure = "${config.system.build.toplevel}";
  };
}
