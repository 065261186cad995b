# vm-ramdisk: one QEMU VM per node booted from the role's kernel + initrd (no
# disk, no host store). The runtime appends console= and the nxc.* parameters
# (nxc.node, nxc.inputs=fwcfg:opt/nxc, nxc.backdoor, nxc.mgmt); the node's
# input files are QEMU fw_cfg files opt/nxc/<name>.
{ ... }:
{
  nxc.ramdisk.enable = true;

  # virtio devices QEMU gives the VM: NICs, and the virtio-serial port the
  # agent opens as the backdoor shell (/dev/virtio-ports/<name>).
  boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_net" "virtio_console" ];
  # qemu_fw_cfg: the input files (nxc.inputs=fwcfg:PREFIX) appear under
  # /sys/firmware/qemu_fw_cfg/by_name/PREFIX/.
  boot.kernelModules = [ "virtio_console" "qemu_fw_cfg" ];
}
