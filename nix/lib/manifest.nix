# Manifest assembly (nxc_manifest: 1, nxc/contracts/schemas/manifest-1.json).
# Pure: artifacts come in as strings (store paths with their context, so the
# manifest derivation depends on them).
let
  util = import ./util.nix;
in
rec {
  flavours = [ "vm-ramdisk" "g5k-ramdisk" "g5k-image" "docker" ];
  ramdiskFlavours = [ "vm-ramdisk" "g5k-ramdisk" ];
  imageKinds = [ "nixos" "selftest" ];

  checkFlavour = where: f:
    if builtins.elem f flavours then f
    else util.fail where "unknown flavour '${toString f}' (known: ${util.joinNames flavours})";

  # What each flavour must provide per role, and the keys it may provide.
  required = {
    vm-ramdisk = [ "kernel" "initrd" ];
    g5k-ramdisk = [ "kernel" "initrd" ];
    g5k-image = [ "image" ];
    docker = [ "container" ];
  };
  allowedArtifacts = [ "kernel" "initrd" "kernel_params" "image" "container" "closure" ];

  roleEntry = { where, flavour, role, artifacts }:
    let
      here = "${where}: role '${role.name}' (${flavour})";
      missing = builtins.filter (k: !(artifacts ? ${k})) required.${flavour};
      extra = builtins.filter (k: !(builtins.elem k allowedArtifacts)) (builtins.attrNames artifacts);
    in
    if missing != [ ] then util.fail here "the build did not provide '${builtins.head missing}'"
    else if extra != [ ] then util.fail here "unknown artifact '${builtins.head extra}'"
    else { inherit (role) quantity; }
      // util.dropNulls artifacts
      // util.optionalAttrs (role.resources != { }) { inherit (role) resources; };

  # assemble {
  #   composition = <normalised composition>;  flavour = "vm-ramdisk";
  #   system = "x86_64-linux";  nxcVersion = "0.1.0";
  #   artifacts = { <role> = { kernel = …; initrd = …; kernel_params = …; }; };
  #   defaultResources = { memory_mb = 1024; };   # filled in where a role sets none
  # }
  assemble = { composition, flavour, system, artifacts, nxcVersion ? null, defaultResources ? { } }:
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
        }) composition.roles;
    in
    if !(builtins.elem kind imageKinds) then util.fail where "unknown image kind '${toString kind}' (known: ${util.joinNames imageKinds})"
    else {
      nxc_manifest = 1;
      composition = composition.name;
      inherit flavour system roles;
      image_kind = kind;
      reproducible = kind == "nixos";
      test_script = composition.testScript;
      topology = composition.topology;
      parameters = composition.parameters;
    } // util.optionalAttrs (nxcVersion != null) { nxc_version = nxcVersion; };
}
