# lib.compose: compositions -> one package per "<composition>::<flavour>", whose
# $out/manifest.json names the artifacts. The result is the attribute set of those
# packages for one system, as NixOS Compose's lib.compose returns it:
#
#   outputs = { self, nixpkgs, nxc }: {
#     packages.x86_64-linux = nxc.lib.compose {
#       inherit nixpkgs;                   # the nixpkgs flake (or a path); omit for selftest
#       system = "x86_64-linux";
#       composition = ./composition.nix;   # output names "composition::<flavour>"
#       # name = "demo";                   # another name than "composition"
#       # compositions = { a = ./a.nix; b = ./b.nix; };  # several (or a file holding that)
#       # flavours = [ "vm-ramdisk" "docker" ];  # default: all the image kind supports
#       # imageKind = "selftest";          # host tools, no nixpkgs (nxc's test images)
#       # parameters = { };                # overrides of the compositions' defaults
#       # setup = ./setup.toml;            # NixOS Compose setup file (see setup.nix)
#       # extraModules = [ ];              # NixOS modules added to every role
#     };
#   };
#
# A flake may also use the result as its whole `outputs` (nxc finds the outputs at
# the top level then).
#
# NixOS Compose's arguments work unchanged: `flavour = "vm"` (one flavour),
# `flavours` as an attribute set (its names are used), `single_composition_name`
# (= name), `extraConfigurations` (= extraModules), `overlays` (nixpkgs overlays
# for every role), `pkgs`, `nur` (handed to compositions; its overlay is added),
# `setup`. The flavour `vm` is nxc's vm-ramdisk: "<c>::vm" is kept as an alias of
# "<c>::vm-ramdisk" for flakes that name it. A composition function may take
# { pkgs, lib, modulesPath, helpers, flavour, setup, nur, nodes, system, name,
# parameters, imageKind }; with imageKind "selftest" there is no nixpkgs, and
# pkgs, lib, modulesPath and nodes fail with a clear error when used.
#
# Parameter overrides can also come from NXC_PARAMETERS_FILE / NXC_PARAMETERS,
# and the setup variant from NXC_SETUP_VARIANT / NXC_SETUP_PARAMS, in an impure
# evaluation (see parameters.nix and setup.nix).
#
# Nothing here forces `nixpkgs` unless a NixOS role is built.
let
  util = import ./util.nix;
  comp = import ./composition.nix;
  params = import ./parameters.nix;
  setupLib = import ./setup.nix;
  man = import ./manifest.nix;
  version = import ./version.nix;

  nxcRoot = ../..;
  agent = nxcRoot + "/nxc/agent/nxc-agent";
  # The /proc sampler in the Prometheus text format, for images without node_exporter.
  metrics = nxcRoot + "/nxc/agent/nxc-metrics";
  # The node-side command of the sync service, shipped in every image.
  syncCommand = nxcRoot + "/nxc/agent/nxc-sync";
  selftestDir = nxcRoot + "/nix/selftest";

  supported = {
    nixos = man.flavours;
    selftest = man.selftestFlavours;
  };

  # No default VM memory here: the runtime sizes it from the built initrd (which
  # carries the role's closure) when the composition sets none
  # (nxc/runtime/memory.py).
  defaultResources = {
    nixos = { };
    selftest = { };
  };
in
{ nixpkgs ? null
, system ? "x86_64-linux"
, composition ? null
, name ? null
, compositions ? null
, flavours ? null
, imageKind ? "nixos"
, parameters ? { }
, extraModules ? [ ]
  # For imageKind "selftest": the function building one role's kernel+initrd
  # ({ system, name, role, agent, metrics? } -> derivation with kernel, initrd,
  # kernel-params), or with `format = "rootfs"` (docker) its container root file
  # system (rootfs.tar); default nix/selftest. `metrics` (the nxc-metrics sampler)
  # is passed only to builders that declare it.
, selftestBuilder ? null
  # NixOS Compose's arguments.
, setup ? null
, flavour ? null
, single_composition_name ? null
, extraConfigurations ? [ ]
, overlays ? [ ]
, pkgs ? null
, nur ? { }
}:
let
  singleName =
    if name != null then name
    else if single_composition_name != null then single_composition_name
    else "composition";

  sources =
    let
      many = if builtins.isPath compositions || builtins.isString compositions then import compositions else compositions;
    in
    if compositions != null && composition != null then util.fail "lib.compose" "give either `composition` or `compositions`, not both"
    else if compositions != null then
      (if builtins.isAttrs many && many != { } then many
       else util.fail "lib.compose" "`compositions` must be a non-empty attribute set { name = ./composition.nix; } (or a file holding one)")
    else if composition != null then { ${singleName} = composition; }
    else util.fail "lib.compose" "no composition given (`composition = ./composition.nix;`)";

  kind =
    if builtins.elem imageKind man.imageKinds then imageKind
    else util.fail "lib.compose" "unknown imageKind '${toString imageKind}' (known: ${util.joinNames man.imageKinds})";

  requested =
    if flavours != null && flavour != null then util.fail "lib.compose" "give either `flavours` or `flavour`, not both"
    else if flavour != null then
      (if builtins.isString flavour then [ flavour ]
       else util.fail "lib.compose" "`flavour` must be a flavour name: nxc builds its own flavours (${man.supportedText})")
    else if flavours == null then null
    else if builtins.isList flavours then flavours
    else if builtins.isAttrs flavours || builtins.isPath flavours then
      builtins.attrNames (if builtins.isPath flavours then import flavours else flavours)
    else util.fail "lib.compose" "`flavours` must be a list of flavour names";

  wanted =
    if requested == null then supported.${kind}
    else map (f:
      let f' = man.checkFlavour "lib.compose" f;
      in if builtins.elem f' supported.${kind} then f'
         else util.fail "lib.compose" "imageKind '${kind}' cannot build flavour '${f}' (it builds: ${util.joinNames supported.${kind}})")
      requested;

  overrides = parameters // params.fromEnvironment;

  selected = if setup == null then null else setupLib.select { where = "lib.compose"; inherit setup; };

  # --- what a composition function gets ------------------------------------------

  requireNixpkgs =
    if nixpkgs == null then
      util.fail "lib.compose" "imageKind 'nixos' needs `nixpkgs` (pass the nixpkgs flake input: nxc.lib.compose { inherit nixpkgs; … })"
    else nixpkgs;

  allOverlays = overlays ++ (if nur ? overlay then [ nur.overlay ] else [ ]);

  nixpkgsPkgs =
    if pkgs != null then pkgs
    else
      let np = requireNixpkgs;
      in if allOverlays == [ ] && np ? legacyPackages then np.legacyPackages.${system}
         else import np { inherit system; overlays = allOverlays; };

  noNixpkgs = what: util.fail "lib.compose" "`${what}` is not available with imageKind 'selftest' (there is no nixpkgs): selftest roles are specs such as { startup = \"…\"; }";

  compositionArgs = cname: flavourName: {
    inherit system nur;
    helpers = { inherit (util) makeMany makeManyById; };
    flavour = { name = flavourName; nxc = man.canonicalFlavour flavourName; image_kind = kind; };
    setup = if selected == null then { params = { }; project.selected = ""; } else selected.setup;
    pkgs = if kind == "selftest" then noNixpkgs "pkgs" else nixpkgsPkgs;
    lib = if kind == "selftest" then noNixpkgs "lib" else nixpkgsPkgs.lib;
    modulesPath = if kind == "selftest" then noNixpkgs "modulesPath" else "${toString requireNixpkgs}/nixos";
    nodes = if kind == "selftest" then noNixpkgs "nodes" else nodesFor cname flavourName;
  };

  # The composition as seen by one output (a composition function may look at its
  # flavour: NixOS Compose compositions do).
  normalisedFor = cname: flavourName:
    comp.normalise {
      name = cname;
      composition = sources.${cname};
      inherit overrides;
      imageKind = kind;
      args = compositionArgs cname flavourName;
    };

  # --- builders -------------------------------------------------------------

  moduleExtras = extraModules ++ extraConfigurations
    ++ (if allOverlays == [ ] then [ ] else [ { nixpkgs.overlays = allOverlays; } ]);

  nixosEval = cname: flavourName: role:
    import ../nixos.nix {
      nixpkgs = requireNixpkgs;
      flavour = man.canonicalFlavour flavourName;
      inherit system agent metrics syncCommand;
      extraModules = moduleExtras;
      composition = normalisedFor cname flavourName;
      inherit role;
      nodes = nodesFor cname flavourName;
    };

  # NixOS Compose's `nodes`: every role's evaluated configuration.
  nodesFor = cname: flavourName:
    builtins.mapAttrs (_: role:
      let config = (nixosEval cname flavourName role).config;
      in config // { inherit config; })
      (normalisedFor cname flavourName).roles;

  selftestRole = c: flavourName: role:
    let
      builder =
        if selftestBuilder != null then selftestBuilder
        else if builtins.pathExists (selftestDir + "/default.nix") then import selftestDir
        else util.fail "lib.compose" "nix/selftest/default.nix is missing from this nxc checkout";
      args = { inherit system agent; name = "${c.name}-${role.name}"; role = role.selftest; }
        // (if (builtins.functionArgs builder) ? metrics then { inherit metrics; } else { })
        # Builders that take `sync` (nix/selftest does) also ship nxc-sync.
        // (if (builtins.functionArgs builder) ? sync then { sync = syncCommand; } else { });
      drv = builder args;
      # A container runs on the host's kernel: the same tools and agent, no kernel.
      rootfs = builder (args // { format = "rootfs"; });
      # Read at evaluation time (import from derivation): the builder decides
      # how its init is found (e.g. rdinit=/init).
      params = util.chomp (builtins.readFile "${drv}/kernel-params");
      boot = {
        kernel = "${drv}/kernel";
        initrd = "${drv}/initrd";
        kernel_params = params;
      };
    in
    if man.canonicalFlavour flavourName == "docker" then {
      container = {
        image = "${rootfs}/rootfs.tar";
        format = "rootfs";
        init = "/init";
        # busybox init powers off on SIGUSR2 (it reboots on SIGTERM).
        stop_signal = "SIGUSR2";
      };
    } else if man.canonicalFlavour flavourName == "g5k-image" then boot // {
      image = {
        file = "${selftestImage c role drv}/image.tar.gz";
        kind = "tar";
        compression = "gzip";
        kernel = "/boot/kernel";
        initrd = "/boot/initrd";
        kernel_params = params;
      };
    } else boot;

  # g5k-image of a selftest role: its kernel + initrd in a tarball (what Kadeploy
  # writes on the node's partition), made with the host's tar and gzip.
  selftestImage = c: role: drv: builtins.derivation {
    name = "nxc-selftest-${c.name}-${role.name}-image";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" ''
      set -e
      mkdir -p tree/boot "$out"
      cp ${drv}/kernel tree/boot/kernel
      cp ${drv}/initrd tree/boot/initrd
      cp ${drv}/kernel-params tree/boot/kernel_params
      tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C tree -cf - . | gzip -1n > "$out/image.tar.gz"
    '' ];
    PATH = "/usr/bin:/bin";
    preferLocalBuild = true;
    allowSubstitutes = false;
  };

  artifactsFor = c: flavourName:
    builtins.mapAttrs (_: role:
      if kind == "selftest" then selftestRole c flavourName role
      else (nixosEval c.name flavourName role).artifacts)
      c.roles;

  manifestFor = cname: flavourName:
    let
      c = normalisedFor cname flavourName;
      flavour' = man.canonicalFlavour flavourName;
    in
    man.assemble {
      composition = c;
      flavour = flavour';
      inherit system;
      nxcVersion = version;
      artifacts = artifactsFor c flavourName;
      defaultResources = defaultResources.${kind}.${flavour'} or { };
      setup = if selected == null then null else { inherit (selected) variant params; };
    };

  overridesChecked = flavourName: params.checkUsed {
    declaredByAny = builtins.concatMap (cname: (normalisedFor cname flavourName).declaredParameters)
      (builtins.attrNames sources);
    inherit overrides;
  };

  # The output derivation stays thin: it only writes manifest.json, whose
  # absolute store paths keep every artifact in the result's closure.
  script = ''
    set -e
    mkdir -p "$out"
    cp "$manifestPath" "$out/manifest.json"
  '';

  manifestDrv = cname: flavourName:
    let
      drvName = "nxc-${cname}-${man.canonicalFlavour flavourName}";
      # An unsupported setup (package overrides) fails here, with the others.
      checks = [ (overridesChecked flavourName) (if selected == null then null else selected.setup) ];
      json = builtins.deepSeq checks (builtins.toJSON (manifestFor cname flavourName));
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
      nixpkgsPkgs.runCommand drvName { manifest = json; passAsFile = [ "manifest" ]; } script;

  # "<c>::vm" next to "<c>::vm-ramdisk", for flakes written for NixOS Compose.
  outputNames = flavourName:
    [ flavourName ] ++ (builtins.filter (a: man.aliases.${a} == flavourName) (builtins.attrNames man.aliases));
in
builtins.listToAttrs (builtins.concatMap (cname:
  builtins.concatMap (flavourName:
    map (shown: { name = "${cname}::${shown}"; value = manifestDrv cname flavourName; }) (outputNames flavourName))
    wanted)
  (builtins.attrNames sources))
