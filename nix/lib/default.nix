# nxc's Nix library (flake output `lib`). Everything but `compose`'s NixOS
# builder is pure Nix with no nixpkgs dependency, so it evaluates anywhere.
let
  naming = import ./naming.nix;
  parameters = import ./parameters.nix;
  topology = import ./topology.nix;
  composition = import ./composition.nix;
  manifest = import ./manifest.nix;
in
{
  compose = import ./compose.nix;
  version = import ./version.nix;

  inherit (naming) nodeNames expandNodes nameClashes isValidName isValidRoleName hostName splitNodeName;
  inherit (manifest) flavours;

  normaliseComposition = composition.normalise;
  mergeParameters = parameters.merge;
  parametersFromEnvironment = parameters.fromEnvironment;
  normaliseTopology = topology.normalise;
  assembleManifest = manifest.assemble;

  # The pieces, for tests and for people extending nxc.
  internal = { inherit naming parameters topology composition manifest; util = import ./util.nix; };
}
