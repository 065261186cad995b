"""What the Grid'5000 flavours (g5k-ramdisk, g5k-image) share: options, settings,
reservation wired to the ledger, the standard environment's facts, the kexec handoff,
the node control. See docs/g5k.md."""
