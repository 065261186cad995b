{
  description = "nxc: compose reproducible distributed experiments with Nix (roles as NixOS configurations, built into docker, vm-ramdisk, g5k-ramdisk or g5k-image)";

  # Only `packages` and `checks` use nixpkgs. `lib` and `templates` never force
  # it, so a composition flake can use nxc offline. A composition flake points
  # this input at its own nixpkgs:
  #   inputs.nxc.inputs.nixpkgs.follows = "nixpkgs";
  # and a selftest composition (no nixpkgs at all) at nothing:
  #   inputs.nxc.inputs.nixpkgs.follows = "";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      lib = import ./nix/lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);

      templateDir = ./compositions;
      templateNames = builtins.filter
        (n: (builtins.readDir templateDir).${n} == "directory" && builtins.pathExists (templateDir + "/${n}/flake.nix"))
        (builtins.attrNames (builtins.readDir templateDir));
      firstLine = file:
        let lines = builtins.filter (l: builtins.isString l && l != "") (builtins.split "\n" (builtins.readFile file));
        in if lines == [ ] then "" else builtins.replaceStrings [ "# " ] [ "" ] (builtins.head lines);
      mkTemplate = name: {
        path = templateDir + "/${name}";
        description = "nxc template '${name}': " + firstLine (templateDir + "/${name}/README.md");
        welcomeText = ''
          # nxc composition from template '${name}'
          `nxc init -t ${name}` fills in nxc's flake reference for you. With
          `nix flake init` instead, replace @NXC_FLAKE_URL@ in flake.nix by
          nxc's flake reference (e.g. git+file:///path/to/nxc).
          Then: `nxc build` and `nxc start`. See README.md.
        '';
      };
    in
    {
      inherit lib;

      templates = builtins.listToAttrs (map (n: { name = n; value = mkTemplate n; }) templateNames)
        // { default = mkTemplate "basic"; };

      # The NixOS modules nxc adds to every role, for use outside lib.compose.
      nixosModules = {
        nxc = ./nix/modules/default.nix;
        vm-ramdisk = ./flavours/vm-ramdisk/module.nix;
        g5k-ramdisk = ./flavours/g5k-ramdisk/module.nix;
        g5k-image = ./flavours/g5k-image/module.nix;
        docker = ./flavours/docker/module.nix;
      };

      packages = forAllSystems (system:
        let nxc = import ./nix/package.nix { pkgs = nixpkgs.legacyPackages.${system}; src = self; };
        in { inherit nxc; default = nxc; });

      # The names NixOS Compose flakes use (`devShell.${system} =
      # nxc.devShells.${system}.nxcShell;`, nxc.defaultPackage.${system}), so that
      # such a flake works with nxc as its only change.
      defaultPackage = forAllSystems (system: self.packages.${system}.nxc);
      devShells = forAllSystems (system:
        let shell = nixpkgs.legacyPackages.${system}.mkShell { packages = [ self.packages.${system}.nxc ]; };
        in { nxcShell = shell; default = shell; });

      # Machines with network access and KVM only (see docs/compositions.md):
      #   nix flake check -L
      checks = forAllSystems (system: import ./nix/checks.nix {
        inherit nixpkgs system lib templateDir templateNames;
        nxc = self.packages.${system}.nxc;
      });
    };
}
