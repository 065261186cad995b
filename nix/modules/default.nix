# The NixOS modules lib.compose adds to every role (flavour modules come on
# top). Options under `nxc.*` describe where the role sits in the composition.
{ lib, ... }:
{
  imports = [ ./agent.nix ./base.nix ./ramdisk.nix ];

  options.nxc = {
    composition = lib.mkOption { type = lib.types.str; default = "composition"; description = "Composition name."; };
    role = lib.mkOption { type = lib.types.str; default = "node"; description = "Role this image is built for."; };
    flavour = lib.mkOption { type = lib.types.str; default = "vm-ramdisk"; description = "Flavour this image is built for."; };
    artifacts = lib.mkOption {
      type = lib.types.attrsOf lib.types.unspecified;
      default = { };
      description = "What the flavour built for this role, in the manifest's per-role form (kernel, initrd, kernel_params, image, container, closure).";
    };
  };
}
