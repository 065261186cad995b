# Composition normalisation. A composition is an attribute set, or a function
# taking { parameters, name, system, imageKind, flavour, setup, pkgs, lib, … } (it
# gets only the arguments it names), or a path to a file holding either. It returns:
#
#   {
#     description = "…";                 # optional
#     parameters = { clients = 2; };     # optional: defaults, overridable
#     roles = {
#       server = { pkgs, ... }: { services.nginx.enable = true; };   # a module: quantity 1
#       client = {                                                  # or a role spec
#         quantity = parameters.clients; # default count (nxc start -r client=N changes it)
#         resources = { memory_mb = 1024; cpus = 2; };
#         module = { pkgs, ... }: { environment.systemPackages = [ pkgs.curl ]; };
#         # modules = [ … ];            # several modules instead of one
#         # Start the role's startup/services once a sync-service state was
#         # signalled COUNT times (a number, a role name: all its nodes, or "all");
#         # a list of such conditions waits for each (docs/sync.md).
#         start_after = { state = "connected"; count = "server"; timeout = 600; };
#       };
#     };
#     common = { … };                    # optional: a module every role imports
#     testScript = ./test.py;            # optional: Python text or a file
#     topology = { … };                  # optional: network model (nxc_topology 1)
#     flavours.vm-ramdisk = { accel = "tcg"; };  # optional: defaults of a flavour's
#                                        # start options (the command line wins)
#   }
#
# NixOS Compose's format is accepted as it is: `nodes` instead of `roles`,
# `rolesDistribution = { role = N; }` for the quantities, `extraVolumes` (a list of
# docker volume specs for every container) and `dockerPorts` ({ role = [ "8080:80" ]; })
# for the docker flavour, and the function arguments { pkgs, lib, modulesPath,
# helpers, flavour, setup, nur, nodes } (see compose.nix).
#
# For imageKind "selftest" roles are not NixOS modules: a role spec's other keys
# (e.g. `startup`) go to nix/selftest as the role description.
#
# `parameters` is a fixed point: the function receives the final values while its
# result declares the defaults. So the result's shape (its attribute names)
# must not depend on parameters; values may.
let
  util = import ./util.nix;
  naming = import ./naming.nix;
  params = import ./parameters.nix;
  topo = import ./topology.nix;

  specKeys = [ "quantity" "module" "modules" "resources" "start_after" ];
  knownKeys = [ "description" "parameters" "roles" "common" "testScript" "topology" "name" "flavours" ]
    # NixOS Compose's
    ++ [ "nodes" "rolesDistribution" "extraVolumes" "dockerPorts" ];
in
rec {
  load = c: if builtins.isPath c || builtins.isString c then import c else c;

  # Evaluate a composition with parameter overrides; returns the raw result and
  # the final parameters.
  evaluate = { name, composition, overrides ? { }, args ? { } }:
    let
      where = "composition '${name}'";
      f = load composition;
      result =
        if builtins.isFunction f then util.callWith (args // { inherit name; parameters = final; }) f
        else if builtins.isAttrs f then f
        else util.fail where "must be an attribute set or a function returning one, got ${builtins.typeOf f}";
      declared = result.parameters or { };
      final = params.merge { inherit where declared; overrides = params.relevant declared overrides; };
    in { inherit result final; };

  normaliseResources = where: r:
    let
      extra = builtins.removeAttrs r [ "memory_mb" "cpus" ];
      check = key: min: max:
        if !(r ? ${key}) then { }
        else if builtins.isInt r.${key} && r.${key} >= min && r.${key} <= max then { ${key} = r.${key}; }
        else util.fail where "resources.${key} must be a whole number in ${toString min}..${toString max}";
    in
    if !(builtins.isAttrs r) then util.fail where "resources must be { memory_mb = …; cpus = …; }"
    else if extra != { } then util.fail where "unknown resource '${builtins.head (builtins.attrNames extra)}' (known: memory_mb, cpus)"
    else check "memory_mb" 96 1048576 // check "cpus" 1 64;

  # start_after = { state; count; timeout ? }, or a list of those; count is a
  # number, a role name (every node of that role at start time) or "all".
  normaliseStartAfter = here: roleNames: value:
    let
      w = "${here}: start_after";
      conditions = if builtins.isList value then value else [ value ];
      known = [ "state" "count" "timeout" ];
      one = c:
        let unknown = builtins.filter (k: !(builtins.elem k known)) (builtins.attrNames c);
        in
        if !(builtins.isAttrs c) then util.fail w "must be { state = \"…\"; count = N; } (count: a number, a role name or \"all\"), or a list of those"
        else if unknown != [ ] then util.fail w "unknown key '${builtins.head unknown}' (known: ${util.joinNames known})"
        else if !(c ? state) || !(builtins.isString c.state) then util.fail w "needs `state`, the name of a sync-service state (a string)"
        else if builtins.match "[A-Za-z0-9][A-Za-z0-9._-]{0,127}" c.state == null then util.fail w "state '${c.state}': letters, digits, '.', '_', '-' (not first), at most 128"
        else if !(c ? count) then util.fail w "state '${c.state}' needs `count`: a number, a role name or \"all\""
        else if builtins.isInt c.count && c.count < 0 then util.fail w "count must not be negative"
        else if builtins.isString c.count && c.count != "all" && !(builtins.elem c.count roleNames) then
          util.fail w "count '${c.count}' is neither a number, \"all\" nor a role (roles: ${util.joinNames roleNames})"
        else if !(builtins.isInt c.count || builtins.isString c.count) then util.fail w "count must be a number, a role name or \"all\""
        else if c ? timeout && !((builtins.isInt c.timeout || builtins.isFloat c.timeout) && c.timeout > 0) then util.fail w "timeout must be a positive number of seconds"
        else { inherit (c) state count; } // (if c ? timeout then { inherit (c) timeout; } else { });
    in map one conditions;

  # A role is a module (function, path or attribute set of options) or a spec
  # with quantity/module/modules/resources. For selftest every attribute set is
  # a spec.
  normaliseRole = { where, imageKind, distribution, roleNames ? [ ] }: roleName: value:
    let
      here = "${where}: role '${roleName}'";
      isSpec = builtins.isAttrs value && (imageKind == "selftest" || builtins.any (k: value ? ${k}) specKeys);
      spec = if isSpec then value else { module = value; };
      modules =
        (if spec ? module then [ spec.module ] else [ ])
        ++ (if spec ? modules then (if builtins.isList spec.modules then spec.modules else util.fail here "`modules` must be a list") else [ ]);
      quantity =
        if !(distribution ? ${roleName}) then spec.quantity or 1
        else if spec ? quantity then util.fail here "has a quantity in both the role and `rolesDistribution`: keep one"
        else distribution.${roleName};
    in
    if imageKind == "selftest" && !(builtins.isAttrs value) then
      util.fail here "imageKind 'selftest' builds roles from host packages, not NixOS modules: give a role spec such as { startup = \"…\"; }"
    else builtins.seq (naming.checkRoleName "${where}: role name" roleName) {
      name = roleName;
      quantity = naming.checkQuantity here quantity;
      resources = normaliseResources here (spec.resources or { });
      startAfter = normaliseStartAfter here roleNames (spec.start_after or [ ]);
      inherit modules;
      # What the selftest builder gets: the spec without the generic keys.
      selftest = builtins.removeAttrs spec specKeys // { name = roleName; };
    };

  # rolesDistribution = { client = 3; } (NixOS Compose): quantities by role.
  normaliseDistribution = where: roleNames: d:
    let
      here = "${where}: rolesDistribution";
      unknown = builtins.filter (n: !(builtins.elem n roleNames)) (builtins.attrNames d);
      check = role: n:
        if builtins.isInt n then n
        else if builtins.isList n then util.fail here "'${role}': nxc names nodes <role><index> (${role}1, ${role}2…): give a number of nodes, not a list of names"
        else util.fail here "'${role}' must be a number of nodes";
    in
    if !(builtins.isAttrs d) then util.fail here "must be an attribute set { role = N; }"
    else if unknown != [ ] then util.fail here "'${builtins.head unknown}' is not a role (roles: ${util.joinNames roleNames})"
    else builtins.mapAttrs check d;

  # extraVolumes / dockerPorts (NixOS Compose, docker flavour only).
  normaliseDocker = where: roleNames: r:
    let
      volumes = r.extraVolumes or [ ];
      ports = r.dockerPorts or { };
      unknown = builtins.filter (n: !(builtins.elem n roleNames)) (builtins.attrNames ports);
      portList = role: p:
        if builtins.isList p && builtins.all (x: builtins.isString x || builtins.isInt x) p then map toString p
        else util.fail where "dockerPorts.${role} must be a list such as [ \"8080:80\" ]";
    in
    if !(builtins.isList volumes && builtins.all builtins.isString volumes) then
      util.fail where "extraVolumes must be a list of docker volume specs (strings such as \"/data:/data\")"
    else if !(builtins.isAttrs ports) then util.fail where "dockerPorts must be an attribute set { role = [ \"8080:80\" ]; }"
    else if unknown != [ ] then util.fail where "dockerPorts: '${builtins.head unknown}' is not a role (roles: ${util.joinNames roleNames})"
    else { inherit volumes; ports = builtins.mapAttrs portList ports; };

  # flavours = { <flavour> = { <option> = value or { <role> = value; }; }; }: passed
  # to the manifest (flavour_options) for the flavour's runtime to read.
  normaliseFlavourOptions = where: f:
    let
      here = "${where}: flavours";
      bad = builtins.filter (n: !(builtins.isAttrs f.${n})) (builtins.attrNames f);
    in
    if !(builtins.isAttrs f) then util.fail here "must be an attribute set { <flavour> = { <option> = value; }; }"
    else if bad != [ ] then util.fail here "'${builtins.head bad}' must be an attribute set of options"
    else if !(util.isJSONValue f) then util.fail here "option values must be plain data"
    else builtins.listToAttrs (map (n: {
      name = naming.checkName "${here}: flavour name" ((import ./manifest.nix).canonicalFlavour n);
      value = f.${n};
    }) (builtins.attrNames f));

  normaliseTestScript = where: t:
    if t == null then null
    else if builtins.isString t then t
    else if builtins.isPath t then builtins.readFile t
    else util.fail where "testScript must be a string, a path to a file, or null";

  # normalise { name; composition; overrides ? {}; imageKind ? "nixos"; args ? {} }
  normalise = { name, composition, overrides ? { }, imageKind ? "nixos", args ? { } }:
    let
      where = "composition '${name}'";
      ev = evaluate { inherit name composition overrides; args = args // { inherit imageKind; }; };
      r = ev.result;
      unknown = builtins.filter (k: !(builtins.elem k knownKeys)) (builtins.attrNames r);
      rawRoles =
        if r ? roles && r ? nodes then util.fail where "has both `roles` and `nodes` (NixOS Compose's older name for roles): keep one"
        else r.roles or r.nodes or null;
      rawNames = if builtins.isAttrs rawRoles then builtins.attrNames rawRoles else [ ];
      distribution = normaliseDistribution where rawNames (r.rolesDistribution or { });
      roles = builtins.mapAttrs (normaliseRole { inherit where imageKind distribution; roleNames = rawNames; }) rawRoles;
      roleNames = builtins.attrNames roles;
      quantities = builtins.mapAttrs (_: role: role.quantity) roles;
      clashes = naming.nameClashes quantities;
      docker = normaliseDocker where roleNames r;
    in
    builtins.seq (naming.checkName "composition name" name) (
      if !(builtins.isAttrs r) then util.fail where "must evaluate to an attribute set"
      else if unknown != [ ] then util.fail where "unknown attribute '${builtins.head unknown}' (known: ${util.joinNames knownKeys})"
      else if !(builtins.isAttrs rawRoles) || rawRoles == { } then util.fail where "`roles` must be a non-empty attribute set of roles"
      else if clashes != [ ] then util.fail where "two roles would both have a node named '${builtins.head clashes}': rename one of the roles"
      else builtins.deepSeq [ (map (role: [ role.resources role.startAfter ]) (builtins.attrValues roles)) docker ] {
        inherit name roles roleNames quantities imageKind;
        description = r.description or "";
        parameters = ev.final;
        declaredParameters = builtins.attrNames (r.parameters or { });
        common = if r ? common then (if builtins.isList r.common then r.common else [ r.common ]) else [ ];
        testScript = normaliseTestScript where (r.testScript or null);
        topology = topo.normalise { inherit where; roles = roleNames; topology = r.topology or null; };
        inherit docker;
        flavourOptions = normaliseFlavourOptions where (r.flavours or { });
      });
}
