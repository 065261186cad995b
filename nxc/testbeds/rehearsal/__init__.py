"""The Grid'5000 rehearsal testbed: local QEMU VMs running a Grid'5000-like standard
environment, the API double bound to them (with a deployer that really boots
environments by kexec), and the client and ssh configs that point nxc at it.

    nxc g5k rehearsal up --nodes 3 --config-dir DIR
    eval "$(nxc g5k rehearsal env --config-dir DIR)"
    nxc start -f g5k-ramdisk            # reserves, pushes, kexecs the VMs
    nxc g5k rehearsal down --config-dir DIR

See docs/g5k.md.
"""
