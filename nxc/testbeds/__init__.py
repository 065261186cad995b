"""Stand-ins for testbeds nxc cannot reach from a development machine (Grid'5000)."""
