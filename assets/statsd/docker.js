/* statsd inside the graphiteapp/graphite-statsd container (docker-compose.yaml).
   It listens on all of the container's interfaces; docker-compose publishes the ports on
   127.0.0.1 only. carbon runs in the same container. */
{
  port: 8125,
  address: "0.0.0.0",
  mgmt_address: "0.0.0.0",
  mgmt_port: 8126,
  graphiteHost: "127.0.0.1",
  graphitePort: 2003,
  backends: ["./backends/graphite"],
  flushInterval: 1000
}
