"""Issue 12 item 5 in the NixOS modules, evaluated without nixpkgs (none here): each
module is called with a stub ``lib`` whose ``mkIf``/``mkDefault`` keep what they wrap,
and the attributes that matter are read back. What a real NixOS build does with them
cannot be shown on this machine; this checks the modules say it."""

from __future__ import annotations

from tests.nix.nixutil import REPO, eval_json, needs_nix

pytestmark = needs_nix

STUB = """
  stubLib = rec {
    mkOption = o: o;
    mkEnableOption = d: { default = false; description = d; };
    mkIf = cond: v: { _if = cond; content = v; };
    mkDefault = v: { _default = v; };
    mkImageMediaOverride = v: v;
    literalExpression = t: t;
    types = { bool = "bool"; str = "str"; listOf = t: "list"; };
  };
  stubPkgs = {
    callPackage = _f: _a: "squashfs";
    makeInitrdNG = _a: "initrd-drv";
    kexec-tools = "kexec-tools";
  };
"""


def module(path: str, config: str) -> str:
    return (
        f"let {STUB} in (import {REPO / path}) {{ lib = stubLib; pkgs = stubPkgs; "
        f'modulesPath = "/m"; config = {config}; }}'
    )


RAMDISK_CONFIG = """{
  nxc.ramdisk = { enable = true; squashfsCompression = "zstd"; extraKernelParams = [ ];
                  loadStoreDb = true; };
  nxc.composition = "c"; nxc.role = "r";
  nix.enable = true; nix.package.out = "/nix-pkg";
  boot.initrd.systemd.enable = false; boot.initrd.compressor = "zstd";
  system.build = { toplevel = "top"; initialRamdisk = "/ird"; kernel = "/k"; };
  system.boot.loader.kernelFile = "bzImage";
}"""


def test_the_store_database_is_loaded_at_boot_as_netboot_does() -> None:
    got = eval_json(
        "let m = "
        + module("nix/modules/ramdisk.nix", RAMDISK_CONFIG)
        + "; in { default = m.options.nxc.ramdisk.loadStoreDb.defaultText; "
        "boot = m.config.content.boot.postBootCommands; "
        "kernel = m.config.content.nxc.artifacts.kernel; }"
    )
    assert got["default"] == "config.nix.enable"  # on whenever nix is on the node
    boot = got["boot"]
    assert boot["_if"] is True
    assert (
        "/nix-pkg/bin/nix-store --load-db < /nix/store/nix-path-registration" in (boot["content"])
    )
    # the kernel file is the architecture's (bzImage here, Image on aarch64)
    assert got["kernel"] == "/k/bzImage"


def test_g5k_ramdisk_leaves_firmware_out_unless_asked() -> None:
    for asked in (False, True):
        config = f"{{ nxc.g5k.firmware = {'true' if asked else 'false'}; }}"
        got = eval_json(
            "let m = " + module("flavours/g5k-ramdisk/module.nix", config) + "; in "
            "{ default = m.options.nxc.g5k.firmware.default; "
            "firmware = m.config.hardware.enableRedistributableFirmware; }"
        )
        assert got["default"] is False
        assert got["firmware"] == {"_default": asked}
