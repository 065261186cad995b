# Role and node naming. Must agree with nxc/expand.py: roles in sorted order (the
# order of a Nix attribute set and of the manifest's JSON object), nodes named
# <role><index> with index from 1, ordinals counted across roles from 1.
let
  util = import ./util.nix;
in
rec {
  # Same pattern as manifest-1.json's "name" ($defs/name).
  namePattern = "[a-z][a-z0-9-]{0,30}";

  isValidName = name: builtins.isString name && builtins.match namePattern name != null;

  # Role names may also hold '_' (manifest-1.json's "role_name"); node names, which
  # are host names, spell it '-' (role my_server -> nodes my-server1, my-server2…).
  roleNamePattern = "[a-z][a-z0-9_-]{0,30}";

  isValidRoleName = name: builtins.isString name && builtins.match roleNamePattern name != null;

  checkRoleName = what: name:
    if isValidRoleName name then name
    else util.fail what "'${toString name}' is not a valid role name (lowercase letter first, then lowercase letters, digits, '_' or '-', at most 31 characters)";

  # The host-name form of a role name: what its nodes' names start with.
  hostName = role: builtins.replaceStrings [ "_" ] [ "-" ] role;

  checkName = what: name:
    if isValidName name then name
    else util.fail what "'${toString name}' is not a valid name (lowercase letter first, then lowercase letters, digits or '-', at most 31 characters)";

  maxQuantity = 4096;

  checkQuantity = where: q:
    if !(builtins.isInt q) then util.fail where "quantity must be a whole number, got ${builtins.typeOf q}"
    else if q < 0 || q > maxQuantity then util.fail where "quantity ${toString q} is out of range (0..${toString maxQuantity})"
    else q;

  # nodeNames "server" 3 == [ "server1" "server2" "server3" ]
  # nodeNames "my_server" 1 == [ "my-server1" ]
  nodeNames = role: quantity: builtins.genList (i: "${hostName role}${toString (i + 1)}") quantity;

  # expandNodes { client = 2; server = 1; } ==
  #   [ { name = "client1"; role = "client"; index = 1; ordinal = 1; } … { name = "server1"; …; ordinal = 3; } ]
  expandNodes = quantities:
    let
      roles = builtins.attrNames quantities;
      step = acc: role:
        let q = quantities.${role};
        in {
          ordinal = acc.ordinal + q;
          nodes = acc.nodes ++ builtins.genList (i: {
            name = "${hostName role}${toString (i + 1)}";
            inherit role;
            index = i + 1;
            ordinal = acc.ordinal + i + 1;
          }) q;
        };
    in (builtins.foldl' step { ordinal = 0; nodes = [ ]; } roles).nodes;

  # Node names that two roles would both produce (e.g. role "node" index 11 and
  # role "node1" index 1), for the given quantities.
  nameClashes = quantities:
    let
      names = map (n: n.name) (expandNodes quantities);
      counts = builtins.foldl' (acc: n: acc // { ${n} = (acc.${n} or 0) + 1; }) { } names;
    in builtins.filter (n: counts.${n} > 1) (builtins.attrNames counts);

  # Which role/index a node name stands for, given the role names; null when
  # none fits. Every role is tried, so roles ending in a digit work too.
  splitNodeName = roles: name:
    let
      fits = role:
        let
          lr = builtins.stringLength role;
          rest = builtins.substring lr (builtins.stringLength name - lr) name;
        in builtins.substring 0 lr name == hostName role && builtins.match "[1-9][0-9]{0,5}" rest != null;
      found = builtins.filter fits roles;
      role = builtins.head found;
      lr = builtins.stringLength role;
    in if found == [ ] then null
       else { inherit role; index = builtins.fromJSON (builtins.substring lr (builtins.stringLength name - lr) name); };
}
