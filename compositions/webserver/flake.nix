{
  description = "nxc composition: an nginx server and N clients";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
  inputs.nxc.url = "@NXC_FLAKE_URL@";
  # One nixpkgs for the roles and for nxc.
  inputs.nxc.inputs.nixpkgs.follows = "nixpkgs";

  outputs = { self, nixpkgs, nxc }:
    let system = "x86_64-linux"; in
    {
      packages.${system} = nxc.lib.compose {
        inherit nixpkgs system;
        name = "webserver";
        composition = ./composition.nix;
      };
    };
}
