# Build one role of a composition as NixOS for one flavour (needs nixpkgs).
# Returns { artifacts; config; system }: artifacts in the manifest's per-role
# form, set by the flavour module through `nxc.artifacts`.
# `nodes` (every role's configuration, as NixOS Compose and NixOS tests give it) is
# a module argument of every role; `metrics` is the nxc-metrics sampler and
# `syncCommand` the sync service's nxc-sync (see agent.nix).
{ nixpkgs, system, flavour, composition, role, agent, metrics ? null, syncCommand ? null, extraModules ? [ ], nodes ? { } }:
let
  nixosSystem =
    if nixpkgs ? lib && nixpkgs.lib ? nixosSystem then nixpkgs.lib.nixosSystem
    else args: import (nixpkgs + "/nixos/lib/eval-config.nix") args;

  evaluated = nixosSystem {
    inherit system;
    specialArgs = {
      # What a role module may want to know about its place in the composition.
      nxcInfo = {
        inherit flavour;
        composition = composition.name;
        role = role.name;
        inherit (composition) parameters quantities;
      };
    };
    modules = [
      ./modules/default.nix
      (../flavours + "/${flavour}/module.nix")
      {
        nxc = { composition = composition.name; role = role.name; inherit flavour; };
        nxc.agent.source = agent;
        nxc.agent.syncSource = syncCommand;
        _module.args.nodes = nodes;
        nxc.agent.metricsSource = metrics;
      }
    ] ++ composition.common ++ extraModules ++ role.modules;
  };
in
{
  inherit (evaluated) config;
  artifacts = evaluated.config.nxc.artifacts;
}
