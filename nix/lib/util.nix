# Small helpers over builtins, so the library needs no nixpkgs.
rec {
  # Values that carry a role/composition name in error messages.
  fail = where: message: throw "nxc: ${where}: ${message}";

  joinNames = names: if names == [ ] then "(none)" else builtins.concatStringsSep ", " names;

  isModuleLike = v: builtins.isFunction v || builtins.isAttrs v || builtins.isPath v;

  optionalAttrs = cond: set: if cond then set else { };

  # Keep only the attributes whose value is not null.
  dropNulls = set: builtins.removeAttrs set (builtins.filter (n: set.${n} == null) (builtins.attrNames set));

  # Call f with the arguments it asks for (like callPackage): a function with a
  # formal-argument set gets only the attributes it names (plus everything when it
  # has none, e.g. `args: …`).
  callWith = available: f:
    let formals = builtins.functionArgs f;
    in if formals == { } then f available else f (builtins.intersectAttrs formals available);

  # Strip one trailing newline (for files read at evaluation time).
  chomp = s:
    let n = builtins.stringLength s;
    in if n > 0 && builtins.substring (n - 1) 1 s == "\n" then builtins.substring 0 (n - 1) s else s;

  # Values the manifest carries must be plain JSON data.
  isJSONValue = v:
    let t = builtins.typeOf v;
    in if t == "set" then (!(v ? outPath)) && builtins.all (n: isJSONValue v.${n}) (builtins.attrNames v)
    else if t == "list" then builtins.all isJSONValue v
    else builtins.elem t [ "int" "float" "bool" "string" "null" ];

  # Like nixpkgs' lib.recursiveUpdate: attribute sets merge, anything else is replaced.
  recursiveUpdate = a: b:
    a // builtins.mapAttrs (n: v:
      if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b;

  # NixOS Compose's helpers (lib.makeManyById): { <name>1 = f 1; …; <name>N = f N; }.
  makeManyById = f: name: count:
    builtins.listToAttrs (builtins.genList (i: { name = "${name}${toString (i + 1)}"; value = f (i + 1); }) count);
  makeMany = conf: makeManyById (_: conf);
}
