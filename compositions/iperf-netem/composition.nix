# Two roles and a network between them: 20 ms each way and 100 Mbit/s from
# server to client; the scenario measures throughput and RTT.
{ parameters, ... }:
{
  description = "iperf-netem: throughput and RTT under an emulated network";

  parameters = {
    delay = "20ms";
    rate = "100mbit";
  };

  roles = {
    server = { ... }: {
      services.iperf3.enable = true;
    };
    client = { ... }: { };
  };

  topology = {
    constraints = [
      { from = "server"; to = "client"; delay = parameters.delay; rate = parameters.rate; symmetric = true; }
    ];
  };

  testScript = ./test.py;
}
