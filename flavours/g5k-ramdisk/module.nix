# g5k-ramdisk: the role's kernel + initrd (closure in a squashfs) started on
# reserved Grid'5000 nodes with kexec; serial console parameters for their
# consoles (kaconsole). Firmware for the nodes' NICs is included.
{ lib, ... }:
{
  nxc.ramdisk.enable = true;
  nxc.ramdisk.extraKernelParams = [ "console=tty0" "console=ttyS0,115200n8" ];

  hardware.enableRedistributableFirmware = lib.mkDefault true;

  # Grid'5000 nodes get their address by DHCP on the main NIC.
  networking.useDHCP = true;
}
