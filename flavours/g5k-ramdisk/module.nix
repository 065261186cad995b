# g5k-ramdisk: the role's kernel + initrd (closure in a squashfs) started on
# reserved Grid'5000 nodes with kexec; serial console parameters for their
# consoles (kaconsole).
#
# Firmware is off by default: with it, every role's initrd carries the whole
# linux-firmware package (hundreds of MiB more to push and to unpack in RAM).
# Clusters whose NICs need firmware (Broadcom bnx2/bnx2x, some Mellanox) need
# `nxc.g5k.firmware = true;`.
{ config, lib, pkgs, ... }:
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

    # The node keeps its Grid'5000 address across the kexec (nxc hands it over);
    # DHCP on the other NICs.
    networking.useDHCP = true;

    # A role can hand its node over to the next one by kexec too.
    environment.systemPackages = [ pkgs.kexec-tools ];
  };
}
