# The nxc Python application, for machines with nixpkgs (flake output
# packages.<system>.nxc). The flake's own files (flake.nix, nix/, flavours/, the
# compositions and the agent) go into the package as nxc/_flake, so that an
# installed nxc can give user flakes a reference to its library: setup.py's build
# step copies them, for this package as for a wheel built with pip.
{ pkgs, src }:
let
  py = pkgs.python3Packages;
  version = import ./lib/version.nix;
in
py.buildPythonApplication {
  pname = "nxc";
  inherit version src;
  pyproject = true;
  build-system = [ py.setuptools py.wheel ];
  dependencies = with py; [ click pyyaml jsonschema ptpython rich ];

  # Tools the runtime calls.
  makeWrapperArgs = [
    "--prefix" "PATH" ":" (pkgs.lib.makeBinPath (with pkgs; [ nix qemu vde2 openssh tmux kexec-tools iproute2 cpio ]))
  ];

  nativeCheckInputs = [ py.pytestCheckHook ];
  # The unit tests only: the others boot VMs or need the nix daemon.
  pytestFlagsArray = [ "tests/unit" ];
  disabledTests = [ "nixbuild" ];

  meta = {
    description = "Compose reproducible distributed experiments with Nix";
    mainProgram = "nxc";
    license = pkgs.lib.licenses.mit;
  };
}
