"""vm-ramdisk: local QEMU VMs booted from each role's kernel + initrd."""
