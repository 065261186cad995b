{
  description = "nxc selftest composition (host packages, not a reproducible NixOS image)";

  inputs.nxc.url = "@NXC_FLAKE_URL@";
  # A selftest composition needs no nixpkgs: point nxc's own input at nothing
  # so that nothing is fetched.
  inputs.nxc.inputs.nixpkgs.follows = "";

  outputs = { self, nxc }:
    let system = "x86_64-linux"; in
    {
      packages.${system} = nxc.lib.compose {
        inherit system;
        name = "selftest";
        composition = ./composition.nix;
        imageKind = "selftest";
      };
    };
}
