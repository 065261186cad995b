# Composition parameters: defaults declared by the composition, overridden by
# values the user passes without editing tracked files.
#
# Precedence (last wins): the composition's `parameters` defaults, the
# `parameters` argument of lib.compose, then the file named by the environment
# variable NXC_PARAMETERS_FILE and the inline JSON object in NXC_PARAMETERS.
# Environment variables are only visible to an impure evaluation
# (`nix build --impure`, which `nxc build --param…` passes); a pure evaluation
# sees none, so a flake-locked build never depends on them silently. The values
# used always end up in the manifest's `parameters`.
let
  util = import ./util.nix;
in
rec {
  # The overrides found in the environment ({} in pure evaluation).
  fromEnvironment =
    let
      file = builtins.getEnv "NXC_PARAMETERS_FILE";
      inline = builtins.getEnv "NXC_PARAMETERS";
      fromFile = if file == "" then { } else parseObject "NXC_PARAMETERS_FILE (${file})" (builtins.readFile file);
      fromInline = if inline == "" then { } else parseObject "NXC_PARAMETERS" inline;
    in fromFile // fromInline;

  parseObject = where: text:
    let v = builtins.fromJSON text;
    in if builtins.isAttrs v then v else util.fail where "must hold a JSON object of parameter values";

  typeName = v: let t = builtins.typeOf v; in if t == "set" then "attribute set" else t;

  # An override must have the type of the default; an integer may replace a
  # float; a null default accepts anything.
  compatible = default: value:
    let td = builtins.typeOf default; tv = builtins.typeOf value;
    in default == null || td == tv || (td == "float" && tv == "int");

  # merge { where = "composition 'x'"; declared = { n = 3; }; overrides = { n = 5; }; } == { n = 5; }
  merge = { where, declared, overrides }:
    let
      names = builtins.attrNames declared;
      check = name:
        if !(declared ? ${name}) then
          util.fail where "parameter '${name}' is not declared by the composition (declared: ${util.joinNames names})"
        else if !(compatible declared.${name} overrides.${name}) then
          util.fail where "parameter '${name}' must be a ${typeName declared.${name}} like its default, got a ${typeName overrides.${name}}"
        else name;
      checked = map check (builtins.attrNames overrides);
      result = builtins.deepSeq checked (declared // overrides);
    in
    if !(builtins.isAttrs declared) then util.fail where "`parameters` must be an attribute set of default values"
    else if !(util.isJSONValue declared) then util.fail where "parameter defaults must be plain data (numbers, strings, booleans, lists, attribute sets)"
    else result;

  # Overrides given for a whole flake apply to every composition that declares
  # them; a name that no composition declares is an error (likely a typo).
  checkUsed = { declaredByAny, overrides }:
    let unknown = builtins.filter (n: !(builtins.elem n declaredByAny)) (builtins.attrNames overrides);
    in if unknown == [ ] then true
       else util.fail "parameters" "'${builtins.head unknown}' is not declared by any composition (declared: ${util.joinNames declaredByAny})";

  # Only the overrides a composition declares.
  relevant = declared: overrides: builtins.intersectAttrs declared overrides;
}
