# lib.compose: compositions -> flake outputs, one package per
# "<composition>::<flavour>" whose $out/manifest.json names the artifacts.
#
#   nxc.lib.compose {
#     nixpkgs = nixpkgs;                 # the nixpkgs flake (or a path); null for selftest
#     system = "x86_64-linux";
#     composition = ./composition.nix;   # with name = "…" (default "composition")
#     # compositions = { a = ./a.nix; b = ./b.nix; };   # several in one flake
#     flavours = [ "vm-ramdisk" "docker" ];             # default: all the image kind supports
#     imageKind = "nixos";               # or "selftest" (host tools, no nixpkgs)
#     parameters = { };                  # overrides of the compositions' defaults
#     extraModules = [ ];                # NixOS modules added to every role
#   }
#
# Parameter overrides can also come from NXC_PARAMETERS_FILE / NXC_PARAMETERS
# in an impure evaluation (see parameters.nix).
#
# Nothing here forces `nixpkgs` unless a NixOS role is built.
let
  util = import ./util.nix;
  naming = import ./naming.nix;
  comp = import ./composition.nix;
  params = import ./parameters.nix;
  man = import ./manifest.nix;
  version = import ./version.nix;

  nxcRoot = ../..;
  agent = nxcRoot + "/nxc/agent/nxc-agent";
  selftestDir = nxcRoot + "/nix/selftest";

  supported = {
    nixos = man.flavours;
    selftest = man.ramdiskFlavours;
  };

  # Default VM memory for NixOS ramdisk roles: the initrd carries the squashfs
  # of the role's closure, so it needs more than a selftest image.
  defaultResources = {
    nixos = { vm-ramdisk = { memory_mb = 1024; }; };
    selftest = { };
  };
in
{ nixpkgs ? null
, system ? "x86_64-linux"
, composition ? null
, name ? "composition"
, compositions ? null
, flavours ? null
, imageKind ? "nixos"
, parameters ? { }
, extraModules ? [ ]
  # For imageKind "selftest": the function building one role's kernel+initrd
  # ({ system, name, role, agent } -> derivation with kernel, initrd,
  # kernel-params); default nix/selftest.
, selftestBuilder ? null
}:
let
  sources =
    if compositions != null && composition != null then util.fail "lib.compose" "give either `composition` or `compositions`, not both"
    else if compositions != null then
      (if builtins.isAttrs compositions && compositions != { } then compositions
       else util.fail "lib.compose" "`compositions` must be a non-empty attribute set { name = ./composition.nix; }")
    else if composition != null then { ${name} = composition; }
    else util.fail "lib.compose" "no composition given (`composition = ./composition.nix;`)";

  kind =
    if builtins.elem imageKind man.imageKinds then imageKind
    else util.fail "lib.compose" "unknown imageKind '${toString imageKind}' (known: ${util.joinNames man.imageKinds})";

  wanted =
    if flavours == null then supported.${kind}
    else map (f:
      let f' = man.checkFlavour "lib.compose" f;
      in if builtins.elem f' supported.${kind} then f'
         else util.fail "lib.compose" "imageKind '${kind}' cannot build flavour '${f}' (it builds: ${util.joinNames supported.${kind}})")
      flavours;

  overrides = parameters // params.fromEnvironment;

  normalised = builtins.mapAttrs (n: c:
    comp.normalise { name = n; composition = c; inherit overrides; imageKind = kind; args = { inherit system; }; })
    sources;

  overridesChecked = params.checkUsed {
    declaredByAny = builtins.concatMap (c: c.declaredParameters) (builtins.attrValues normalised);
    inherit overrides;
  };

  # --- builders -------------------------------------------------------------

  requireNixpkgs =
    if nixpkgs == null then
      util.fail "lib.compose" "imageKind 'nixos' needs `nixpkgs` (pass the nixpkgs flake input: nxc.lib.compose { inherit nixpkgs; … })"
    else nixpkgs;

  pkgs =
    let np = requireNixpkgs;
    in if np ? legacyPackages then np.legacyPackages.${system} else import np { inherit system; };

  selftestRole = c: role:
    let
      builder =
        if selftestBuilder != null then selftestBuilder
        else if builtins.pathExists (selftestDir + "/default.nix") then import selftestDir
        else util.fail "lib.compose" "nix/selftest/default.nix is missing from this nxc checkout";
      drv = builder { inherit system agent; name = "${c.name}-${role.name}"; role = role.selftest; };
    in {
      kernel = "${drv}/kernel";
      initrd = "${drv}/initrd";
      # Read at evaluation time (import from derivation): the builder decides
      # how its init is found (e.g. rdinit=/init).
      kernel_params = util.chomp (builtins.readFile "${drv}/kernel-params");
    };

  nixosRole = c: flavour: role:
    (import ../nixos.nix {
      nixpkgs = requireNixpkgs;
      inherit system flavour agent extraModules;
      composition = c;
      inherit role;
    }).artifacts;

  artifactsFor = c: flavour:
    builtins.mapAttrs (_: role:
      if kind == "selftest" then selftestRole c role else nixosRole c flavour role)
      c.roles;

  manifestFor = c: flavour:
    man.assemble {
      composition = c;
      inherit flavour system;
      nxcVersion = version;
      artifacts = artifactsFor c flavour;
      defaultResources = defaultResources.${kind}.${flavour} or { };
    };

  # The output derivation stays thin: it only writes manifest.json, whose
  # absolute store paths keep every artifact in the result's closure.
  script = ''
    set -e
    mkdir -p "$out"
    cp "$manifestPath" "$out/manifest.json"
  '';

  manifestDrv = c: flavour:
    let
      manifest = manifestFor c flavour;
      drvName = "nxc-${c.name}-${flavour}";
      json = builtins.deepSeq overridesChecked (builtins.toJSON manifest);
    in
    if kind == "selftest" then
      derivation {
        name = drvName;
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" script ];
        PATH = "/usr/bin:/bin";
        manifest = json;
        passAsFile = [ "manifest" ];
      }
    else
      pkgs.runCommand drvName { manifest = json; passAsFile = [ "manifest" ]; } script;

  outputName = c: flavour: "${c.name}::${flavour}";

  packages = builtins.listToAttrs (builtins.concatMap (c:
    map (flavour: { name = outputName c flavour; value = manifestDrv c flavour; }) wanted)
    (builtins.attrValues normalised));
in
{
  packages.${system} = packages;
}
