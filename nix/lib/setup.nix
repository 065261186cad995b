# setup.toml, as NixOS Compose defines it: build-time settings kept next to the
# composition, with named variants.
#
#   [project]                  # optional; `selected = "dev"` picks a variant
#   [params]                   # values the composition reads as setup.params.<name>
#   a = "hello"
#   [options]                  # read by the `nxc build` command (flavour,
#   flavour = "vm"             #   composition-flavour, nix-flags)
#   [dev.params]               # a variant: merged over the top level when selected
#   a = "bye"
#   [override-params]          # optional: wins over params (NixOS Compose wrote it)
#
# The selected variant is, in order: NXC_SETUP_VARIANT (set by `nxc build --setup
# NAME`; impure evaluation only), else [project] selected in the file, else none.
# NXC_SETUP_PARAMS (a JSON object, from `nxc build --setup-param k=v`) overrides
# params. The composition gets the merged table as its `setup` argument, with
# `setup.project.selected` the variant name ("" for none).
#
# Package overrides ([overrides], [<variant>.build]) applied through overlays by
# NixOS Compose are not supported: selecting a setup that has them is an error.
let
  util = import ./util.nix;
  reserved = [ "project" "options" "params" "overrides" "override-params" "build" ];
  unsupported = [ "overrides" "build" ];
in
rec {
  parse = where: setup:
    if setup == null || setup == { } then { }
    else if builtins.isPath setup || builtins.isString setup then builtins.fromTOML (builtins.readFile setup)
    else if builtins.isAttrs setup then setup
    else util.fail where "`setup` must be a path to setup.toml (setup = ./setup.toml;)";

  variantsOf = raw: builtins.filter (n: !(builtins.elem n reserved) && builtins.isAttrs raw.${n}) (builtins.attrNames raw);

  fromEnvironment = {
    variant = builtins.getEnv "NXC_SETUP_VARIANT";
    params =
      let text = builtins.getEnv "NXC_SETUP_PARAMS";
      in if text == "" then { } else builtins.fromJSON text;
  };

  # select { where; setup = ./setup.toml; } == { variant = "dev" | null; params = {…}; setup = {…}; }
  select = { where, setup, environment ? fromEnvironment }:
    let
      here = "${where}: setup.toml";
      raw = parse where setup;
      variants = variantsOf raw;
      asked =
        if environment.variant != "" then environment.variant
        else if raw ? project && raw.project ? selected && raw.project.selected != "" then raw.project.selected
        else null;
      merged =
        if asked == null then raw
        else if builtins.elem asked variants then util.recursiveUpdate raw raw.${asked}
        else util.fail here "no variant '${asked}' (variants: ${util.joinNames variants})";
      declared = merged.params or { };
      overrides = environment.params;
      unknown = builtins.filter (n: !(declared ? ${n})) (builtins.attrNames overrides);
      params =
        if !(builtins.isAttrs declared) then util.fail here "[params] must be a table"
        else if unknown != [ ] then util.fail here "parameter '${builtins.head unknown}' is not in [params] (declared: ${util.joinNames (builtins.attrNames declared)})"
        else declared // (merged."override-params" or { }) // overrides;
      dropped = builtins.filter (n: merged ? ${n}) unsupported;
      checked =
        if dropped != [ ] then
          util.fail here "[${if asked == null then "" else asked + "."}${builtins.head dropped}] (package overrides through overlays) is not supported by nxc: apply them with an overlay module (see docs/migrating.md)"
        else merged;
    in
    {
      variant = asked;
      inherit params variants;
      setup = builtins.removeAttrs checked [ "override-params" ] // {
        inherit params;
        project = (checked.project or { }) // { selected = if asked == null then "" else asked; };
      };
    };
}
