# Manifest assembly (nxc_manifest: 1, nxc/contracts/schemas/manifest-1.json).
# Pure: artifacts come in as strings (store paths with their context, so the
# manifest derivation depends on them).
let
  util = import ./util.nix;
in
rec {
  flavours = [ "vm-ramdisk" "g5k-ramdisk" "g5k-image" "docker" ];
  ramdiskFlavours = [ "vm-ramdisk" "g5k-ramdisk" ];
  # What selftest images (host packages) can be built into: the ramdisk flavours,
  # g5k-image (the same kernel + initrd in an image tarball) and docker (a root
  # file system).
  selftestFlavours = ramdiskFlavours ++ [ "g5k-image" "docker" ];
  imageKinds = [ "nixos" "selftest" ];

  # NixOS Compose's names: `vm` is nxc's vm-ramdisk; the flavours it had that nxc
  # does not build get an error naming the ones it does.
  aliases = { vm = "vm-ramdisk"; };
  foreignFlavours = [ "nspawn" "g5k-nfs-store" "nixos-test" "nixos-test-driver" "nixos-test-ssh" ];
  supportedText = "vm-ramdisk (alias vm), g5k-ramdisk, g5k-image, docker";
  canonicalFlavour = f: if builtins.isString f then aliases.${f} or f else f;

  checkFlavour = where: f:
    let c = canonicalFlavour f;
    in if builtins.elem c flavours then c
    else if builtins.elem f foreignFlavours then
      util.fail where "flavour '${f}' (from NixOS Compose) is not supported by nxc (supported: ${supportedText})"
    else util.fail where "unknown flavour '${toString f}' (known: ${supportedText})";

  # What each flavour must provide per role, and the keys it may provide.
  required = {
    vm-ramdisk = [ "kernel" "initrd" ];
    g5k-ramdisk = [ "kernel" "initrd" ];
    g5k-image = [ "image" ];
    docker = [ "container" ];
  };
  allowedArtifacts = [ "kernel" "initrd" "kernel_params" "image" "container" "closure" ];

  roleEntry = { where, flavour, role, artifacts, docker ? { volumes = [ ]; ports = { }; } }:
    let
      here = "${where}: role '${role.name}' (${flavour})";
      # NixOS Compose's extraVolumes / dockerPorts go with the container.
      ports = docker.ports.${role.name} or [ ];
      container =
        if flavour == "docker" && artifacts ? container && builtins.isAttrs artifacts.container then {
          container = artifacts.container
            // util.optionalAttrs (docker.volumes != [ ]) { inherit (docker) volumes; }
            // util.optionalAttrs (ports != [ ]) { inherit ports; };
        } else { };
      missing = builtins.filter (k: !(artifacts ? ${k})) required.${flavour};
      extra = builtins.filter (k: !(builtins.elem k allowedArtifacts)) (builtins.attrNames artifacts);
    in
    if missing != [ ] then util.fail here "the build did not provide '${builtins.head missing}'"
    else if extra != [ ] then util.fail here "unknown artifact '${builtins.head extra}'"
    else { inherit (role) quantity; }
      // util.dropNulls artifacts
      // container
      // util.optionalAttrs (role.resources != { }) { inherit (role) resources; }
      // util.optionalAttrs ((role.startAfter or [ ]) != [ ]) { start_after = role.startAfter; };

  # assemble {
  #   composition = <normalised composition>;  flavour = "vm-ramdisk";
  #   system = "x86_64-linux";  nxcVersion = "0.1.0";
  #   artifacts = { <role> = { kernel = …; initrd = …; kernel_params = …; }; };
  #   defaultResources = { memory_mb = 1024; };   # filled in where a role sets none
  #   setup = { variant = "dev"; params = { … }; };  # setup.toml's selection, if any
  # }
  #
  # `parameters` holds the composition's parameters and setup.toml's params (a
  # name in both is an error).
  assemble = { composition, flavour, system, artifacts, nxcVersion ? null, defaultResources ? { }, setup ? null }:
    let
      where = "composition '${composition.name}'";
      kind = composition.imageKind;
      withDefaults = role: role // { resources = defaultResources // role.resources; };
      roles = builtins.mapAttrs (name: role:
        roleEntry {
          inherit where;
          flavour = checkFlavour where flavour;
          role = withDefaults role;
          artifacts = artifacts.${name} or (util.fail where "no artifacts for role '${name}'");
          docker = composition.docker or { volumes = [ ]; ports = { }; };
        }) composition.roles;
      setupParams = if setup == null then { } else setup.params;
      clash = builtins.filter (n: setupParams ? ${n}) (builtins.attrNames composition.parameters);
    in
    if !(builtins.elem kind imageKinds) then util.fail where "unknown image kind '${toString kind}' (known: ${util.joinNames imageKinds})"
    else if clash != [ ] then util.fail where "parameter '${builtins.head clash}' is both a composition parameter and a setup.toml param: rename one"
    else if !(util.isJSONValue setupParams) then util.fail where "setup.toml params must be plain values"
    else {
      nxc_manifest = 1;
      composition = composition.name;
      inherit flavour system roles;
      image_kind = kind;
      reproducible = kind == "nixos";
      test_script = composition.testScript;
      topology = composition.topology;
      parameters = composition.parameters // setupParams;
    } // util.optionalAttrs (nxcVersion != null) { nxc_version = nxcVersion; }
      // util.optionalAttrs (setup != null) { setup = { inherit (setup) variant; }; }
      // util.optionalAttrs ((composition.flavourOptions or { }) != { }) { flavour_options = composition.flavourOptions; };
}
