# The node came up as nxc set it up: agent done, ssh and metrics served.
start_all()
node1.wait_for_unit("nxc-agent.service")
node1.wait_for_unit("sshd.service")
node1.wait_for_open_port(22)
node1.wait_for_open_port(9100)
assert node1.succeed("hostname").strip() == "node1"
assert "NXC_ROLE=node" in node1.succeed("cat /etc/nxc/env")
node1.succeed("curl -sf http://127.0.0.1:9100/metrics | grep -q '^node_load1 '")
