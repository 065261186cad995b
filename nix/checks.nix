# Flake checks, for machines with network access (nixpkgs) and KVM:
#   nix flake check -L
# For every NixOS template: build every flavour; boot the vm-ramdisk build and
# run its testScript with nxc inside the build sandbox. The selftest template is
# left out: it is built from the host's packages (impure), which a sandboxed
# build cannot see; CI covers it on Debian.
{ nixpkgs, system, lib, nxc, templateDir, templateNames }:
let
  pkgs = nixpkgs.legacyPackages.${system};
  nixosTemplates = builtins.filter (n: n != "selftest") templateNames;

  composed = name: lib.compose {
    inherit nixpkgs system name;
    composition = templateDir + "/${name}/composition.nix";
  };

  # Every flavour once (without the `<name>::vm` alias of vm-ramdisk).
  buildAll = name:
    let
      outputs = composed name;
      names = builtins.filter (o: o != "${name}::vm") (builtins.attrNames outputs);
    in pkgs.linkFarm "nxc-check-${name}-build"
      (map (o: { name = builtins.replaceStrings [ "::" ] [ "-" ] o; path = outputs.${o}; }) names);

  runTest = name:
    let built = (composed name)."${name}::vm-ramdisk";
    in pkgs.runCommand "nxc-check-${name}-vm" {
      nativeBuildInputs = [ nxc pkgs.qemu pkgs.vde2 pkgs.openssh ];
      requiredSystemFeatures = [ "kvm" "nixos-test" ];
    } ''
      export HOME=$TMPDIR
      export NXC_STATE_HOME=$TMPDIR/nxc-state
      mkdir -p project && cd project
      echo '{ outputs = { self }: { }; }' > flake.nix
      nxc start -m ${built}/manifest.json
      status=0
      nxc driver -t || status=$?
      nxc stop
      mkdir -p $out
      cp -r $NXC_STATE_HOME/*/runs $out/ 2>/dev/null || true
      exit $status
    '';
in
builtins.listToAttrs (builtins.concatMap (n: [
  { name = "${n}-build"; value = buildAll n; }
  { name = "${n}-vm"; value = runTest n; }
]) nixosTemplates)
