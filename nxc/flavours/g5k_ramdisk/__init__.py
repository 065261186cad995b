"""g5k-ramdisk: reserved Grid'5000 nodes kexec'ed into each role's kernel + initrd."""
