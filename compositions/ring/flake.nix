{
  description = "nxc composition: N servers in a ring, clients started once it is connected";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
  inputs.nxc.url = "@NXC_FLAKE_URL@";
  # One nixpkgs for the roles and for nxc.
  inputs.nxc.inputs.nixpkgs.follows = "nixpkgs";

  outputs = { self, nixpkgs, nxc }:
    let system = "x86_64-linux"; in
    {
      packages.${system} = nxc.lib.compose {
        inherit nixpkgs system;
        name = "ring";
        composition = ./composition.nix;
      };
    };
}
